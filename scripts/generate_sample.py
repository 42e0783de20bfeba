#!/usr/bin/env python3
"""Generate the SYNTHETIC RedSM5-shaped sample shipped in ``Data/redsm5_sample/``.

The real RedSM5 data (``irlab-udc/redsm5``) is gated and cannot be redistributed, so the
repository ships this stand-in instead. It has the exact RedSM5 schema:

* ``redsm5_posts.csv``: ``post_id``, ``text``
* ``redsm5_annotations.csv``: ``post_id``, ``sentence_id`` (``{post_id}_{n}``, n = index of the
  sentence in the post), ``sentence_text``, ``DSM5_symptom``, ``status`` (1 = evidence present,
  0 = clinician marked it absent), ``explanation``

Every post is invented from templates; none of it is a real Reddit post and nothing in it
supports clinical conclusions. The sample deliberately contains the awkward cases of the real
data so the pipeline is exercised on them: posts with no symptom, posts far longer than a
512-token window, status-0 rows, ``SPECIAL_CASE`` rows, sentences carrying two symptoms, and
``sentence_text`` that is not an exact substring of the post (whitespace differences and
paraphrases). The counts are printed at the end.

Stdlib only and fully determined by ``--seed``: the same arguments give byte-identical files.

Usage::

    python3 scripts/generate_sample.py                      # Data/redsm5_sample, seed 13, 360 posts
    python3 scripts/generate_sample.py --out DIR --seed N --posts N
"""

from __future__ import annotations

import argparse
import csv
import random
import string
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_OUT = Path("Data/redsm5_sample")
DEFAULT_SEED = 13
DEFAULT_POSTS = 360
MIN_POSTS = 8

POSTS_FILE = "redsm5_posts.csv"
ANNOTATIONS_FILE = "redsm5_annotations.csv"
POSTS_HEADER: tuple[str, ...] = ("post_id", "text")
ANNOTATIONS_HEADER: tuple[str, ...] = (
    "post_id",
    "sentence_id",
    "sentence_text",
    "DSM5_symptom",
    "status",
    "explanation",
)

# Kept in sync with src/dsm5_hpo/data/criteria.py (a unit test checks it); duplicated here so
# the script runs with a bare python3 and no installed package.
CRITERIA: tuple[str, ...] = (
    "DEPRESSED_MOOD",
    "ANHEDONIA",
    "APPETITE_CHANGE",
    "SLEEP_ISSUES",
    "PSYCHOMOTOR",
    "FATIGUE",
    "WORTHLESSNESS",
    "COGNITIVE_ISSUES",
    "SUICIDAL_THOUGHTS",
)
SPECIAL_CASE = "SPECIAL_CASE"

# Rough shape of the real label distribution (mood and worthlessness common, psychomotor and
# appetite rare) but flattened so every criterion still has enough positives to learn from.
CRITERION_WEIGHTS: tuple[float, ...] = (6.0, 4.0, 2.5, 3.5, 2.0, 3.5, 5.0, 3.0, 4.0)

LONG_MIN_WORDS = 600
LONG_MAX_WORDS = 1500
# Word offset past which a 512-token window (question + post) certainly no longer reaches.
WINDOW_WORDS = 400

ID_ALPHABET = string.ascii_lowercase + string.digits

# --------------------------------------------------------------------------------------------
# Slot fillers. Templates reference them as {name}; each name is filled once per sentence.
# --------------------------------------------------------------------------------------------
SLOTS: dict[str, tuple[str, ...]] = {
    "dur": (
        "for weeks",
        "for about two months",
        "since the breakup",
        "since I moved out",
        "for almost a year",
        "since last winter",
        "for the past three weeks",
        "since I lost my job",
        "since the semester started",
    ),
    "emo": (".", ".", ".", "...", " 😞", " 😔", ". :(", "."),
    "hours": ("two", "three", "four", "maybe three"),
    "span": ("a month", "two months", "a few weeks", "half a year", "six weeks"),
    "long_hours": ("12", "13", "14", "15", "16"),
    "kg": ("5", "7", "10", "15", "20"),
    "unit": ("pounds", "kilos", "lbs"),
    "hobby": (
        "playing guitar",
        "gaming",
        "drawing",
        "reading",
        "running",
        "baking",
        "photography",
        "skating",
        "painting miniatures",
        "cooking",
        "hiking",
    ),
    "hobby_obj": ("guitar", "sketchbook", "running shoes", "camera", "Switch", "paints", "keyboard"),
    "people": (
        "my friends",
        "my family",
        "my girlfriend",
        "my boyfriend",
        "my roommates",
        "my coworkers",
        "my sister",
        "my partner",
    ),
    "someone": ("my boss", "my mom", "my roommate", "my coworker", "my partner", "my best friend"),
    "Someone": ("My boss", "My mom", "My roommate", "My coworker", "My partner", "My best friend"),
    "relative": ("brother", "mom", "dad", "sister", "grandpa", "aunt", "cousin"),
    "task": ("emails", "my homework", "my thesis", "reports at work", "simple recipes", "the group chat"),
    "place": ("work", "class", "the gym", "the office", "school", "the store"),
    "time": ("3am", "4am", "2:30", "5am", "3:30"),
    "pm_time": ("2pm", "3pm", "4pm", "noon"),
    "food": ("pizza", "ramen", "cereal", "toast", "chips", "cookies", "crackers"),
    "name": ("Sam", "José", "Zoë", "Maya", "Chris", "Rachel", "Lukas", "Ana", "Priya", "Tom"),
    "chore": (
        "doing laundry",
        "making breakfast",
        "answering one email",
        "taking a shower",
        "walking the dog",
    ),
    "event": ("class", "meetings", "dinner", "movies", "lectures"),
    "mistake": (
        "a stupid mistake at work",
        "failing one exam",
        "the breakup",
        "a text I sent last year",
        "missing my friend's birthday",
    ),
    "months": ("two", "six", "eight", "ten"),
    "trauma": ("the accident", "what happened in high school", "the night of the fire"),
    "show": ("The Office", "that baking show", "a true crime podcast", "One Piece", "Severance"),
    "race": ("10k", "half marathon", "long hike", "move", "double shift"),
    "city": ("Seattle", "Glasgow", "Montréal", "Manchester", "Portland", "Dublin"),
    "job": (
        "barista",
        "nurse",
        "cashier",
        "software tester",
        "warehouse picker",
        "line cook",
        "receptionist",
    ),
    "clock": ("6am", "7am", "noon", "2pm", "10pm"),
    "weekday": ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday"),
    "tip_topic": (
        "meal prepping on a budget",
        "keeping houseplants alive",
        "learning to drive as an adult",
        "finding a good therapist",
        "getting a cat to stop scratching the couch",
    ),
    "pet": ("cat", "dog", "rabbit", "gecko", "parrot"),
    "season": ("spring", "summer", "autumn", "winter"),
    "housemates": ("my parents", "two roommates", "my partner", "my sister", "nobody, just my cat"),
    "age": ("19", "22", "24", "27", "31", "35", "42"),
    "subject": ("nursing", "accounting", "graphic design", "computer science", "biology", "history"),
    "app": ("Headspace", "Duolingo", "a habit tracker", "a budgeting app", "Calm"),
    "dish": ("lasagna", "pad thai", "crème brûlée", "chili", "banana bread", "pierogi"),
    "num_years": ("two", "three", "five", "six"),
    "exam": ("driving test", "chemistry exam", "certification exam", "job interview"),
    "genre": ("lo-fi", "old jazz", "metal", "K-pop", "folk music", "podcasts"),
    "destination": ("Lisbon", "Japan", "Mexico City", "the Scottish Highlands", "Iceland"),
    "month": ("March", "April", "June", "September", "October"),
    "kid_age": ("three", "five", "seven", "ten"),
    "country": ("Portugal", "Poland", "Brazil", "Ireland", "Vietnam"),
}

# Filler slots drawn once per post (a tuple, not a set: iteration order feeds the RNG stream).
PER_POST_SLOTS: tuple[str, ...] = ("city", "age", "job", "subject", "housemates", "country", "pet")

# --------------------------------------------------------------------------------------------
# Evidence templates: at least eight per criterion, each with slots, so the signal is learnable
# but never one fixed string. Some carry commas, double quotes, curly quotes or emoji on purpose.
# --------------------------------------------------------------------------------------------
EVIDENCE: dict[str, tuple[str, ...]] = {
    "DEPRESSED_MOOD": (
        "I've felt empty and numb {dur}{emo}",
        "Every single day I wake up sad and it doesn't lift until I fall asleep again.",
        "I've cried almost every night {dur} and I don't even know why anymore.",
        "Honestly everything feels hopeless, like nothing is ever going to get better{emo}",
        "There's this heavy sadness that follows me around all day, at {place}, at home, everywhere.",
        "I just feel so down all the time, even when {people} try to cheer me up.",
        "My mood has been at rock bottom {dur}{emo}",
        "It's like a gray cloud sits over everything, nothing feels good or bright anymore.",
        "Some days the sadness is so heavy I can barely breathe{emo}",
        "I keep telling {people} I'm \"fine\" but honestly I've been miserable {dur}.",
        "It\u2019s like I\u2019m hollow inside and nothing fills it.",
    ),
    "ANHEDONIA": (
        "I used to love {hobby} but now I can't be bothered to even try{emo}",
        "Nothing is fun anymore, not {hobby}, not hanging out with {people}, nothing.",
        'My therapist asked "what do you enjoy?" and I couldn\'t name a single thing.',
        "I haven't touched my {hobby_obj} in months because it just doesn't feel like anything.",
        "Even when {people} invite me out I just don't care, it all feels pointless.",
        "Stuff that used to make me happy, like {hobby}, feels completely flat now.",
        "I don't look forward to anything anymore, not even weekends or holidays.",
        "I went to a concert I had been excited about for months and felt absolutely nothing.",
        "I've lost interest in basically everything {dur}{emo}",
        "Food, music, games, none of it has given me any pleasure {dur}.",
    ),
    "APPETITE_CHANGE": (
        "I've lost {kg} {unit} in {span} because I barely eat anymore.",
        "I have zero appetite, some days I only eat a few bites of {food}.",
        "I've been binge eating every night and gained {kg} {unit} in {span}.",
        "Food just doesn't appeal to me at all, I have to force myself to eat.",
        "I keep stress eating {food} until I feel sick{emo}",
        "My clothes don't fit anymore, I've lost so much weight without trying.",
        "I forget to eat for whole days and when I remember I'm not even hungry.",
        "I can't stop eating, I'll finish a whole bag of {food} and still want more.",
        "{Someone} noticed I've gotten really thin because I'm just never hungry.",
        "I've gained {kg} {unit} in {span} from eating junk just to feel something.",
    ),
    "SLEEP_ISSUES": (
        "I can't fall asleep until {time} most nights{emo}",
        "I've been sleeping {long_hours} hours a day and I still want to stay in bed.",
        "I wake up at {time} every night and just lie there staring at the ceiling.",
        "My sleep has been completely wrecked {dur}, I get maybe {hours} hours a night.",
        "Insomnia has been brutal, I'm lucky if I sleep at all before sunrise.",
        "On weekends I sleep until {pm_time} and could easily keep sleeping.",
        "I lie awake for hours every night with my mind racing.",
        "I sleep all the time now, it's the only way to escape.",
        "I haven\u2019t had a full night\u2019s sleep {dur}.",
        "Even with melatonin I'm up until {time} and then I sleep through all my alarms.",
    ),
    "PSYCHOMOTOR": (
        "I feel like I'm moving in slow motion, {someone} keeps asking why I'm so slow.",
        "I can't sit still, I pace around my apartment for hours.",
        "My speech has gotten so slow that people finish my sentences for me.",
        "{Someone} said I look like I'm moving through molasses lately.",
        "I'm constantly restless, bouncing my leg, getting up and sitting down again.",
        "It takes me forever to do simple things like getting dressed, everything is slowed down.",
        "I've been so agitated that I can't stay in my chair during {event}.",
        "People at {place} have noticed I talk and move way slower than I used to.",
        "My hands won't stop fidgeting and I keep pacing, {someone} says it's exhausting to watch.",
        "I just sit there for hours without moving, staring at the wall{emo}",
    ),
    "FATIGUE": (
        "I'm exhausted all the time, even after doing basically nothing{emo}",
        "I have no energy, showering feels like running a marathon.",
        "By noon I'm completely drained and need to lie down.",
        "I've been so tired {dur} that getting out of bed is the hardest part of my day.",
        "Even small things like {chore} wipe me out for the rest of the day.",
        "I feel physically heavy and worn out no matter how much I rest.",
        "My energy is just gone, I used to go to {place} every day and now I can't.",
        "I'm constantly fatigued, like my battery never charges past 10%.",
        "Doing the dishes leaves me so exhausted I have to sit down afterwards.",
        "I have zero energy to do anything, even {hobby}.",
    ),
    "WORTHLESSNESS": (
        "I feel completely worthless, like I'm just a burden to {people}.",
        "Everything that goes wrong feels like my fault{emo}",
        "I'm such a failure, I can't do anything right.",
        "I keep thinking I don't deserve {people}, they're way too good for me.",
        "I feel so guilty about everything, even things that happened years ago.",
        "I look in the mirror and see someone who isn't worth anything.",
        "I hate myself for being so useless at {place}.",
        "I'm a disappointment to my parents and I know it{emo}",
        "Whenever someone is nice to me I feel like I don't deserve it.",
        "I can't stop beating myself up over {mistake}.",
    ),
    "COGNITIVE_ISSUES": (
        "I can't concentrate on anything, I read the same paragraph five times and nothing sticks.",
        "My brain has felt foggy {dur} and I keep losing track of {task}.",
        "I can't make even simple decisions, like what to eat, I just freeze.",
        "At {place} I zone out constantly and my boss has started to notice.",
        "I used to be sharp but now I can't focus on {task} for more than a few minutes.",
        "I spend twenty minutes deciding which shirt to wear and then give up.",
        "It's like my thoughts are moving through mud, I can't think clearly.",
        "I keep losing my train of thought in the middle of a sentence{emo}",
        "My grades dropped because I just can't concentrate during {event} anymore.",
        "Every decision, even replying to a text, feels impossible to make.",
    ),
    "SUICIDAL_THOUGHTS": (
        "Sometimes I think everyone would be better off without me.",
        "I've been thinking about death a lot {dur}.",
        "Some nights I wish I just wouldn't wake up.",
        "I don't want to be alive anymore, I'm just tired of existing.",
        "Thoughts of ending it all keep coming back, even though I don't have a plan.",
        "I catch myself thinking it would be easier if I just disappeared forever.",
        "I've had suicidal thoughts almost every day {dur}.",
        "Part of me hopes something happens to me so I don't have to keep going.",
        "I keep thinking about not being here anymore{emo}",
        "Sometimes I think I wouldn't mind if I just didn't exist.",
    ),
}

# Clinically relevant content that is outside the nine criteria (RedSM5's SPECIAL_CASE).
SPECIAL: tuple[str, ...] = (
    "I've started having panic attacks at {place}, my chest gets tight and I can't breathe.",
    "I drink almost every night now just to numb everything.",
    "I've been self-harming again after being clean for {months} months.",
    "I keep having flashbacks to {trauma} and can't shake them.",
    "I've been smoking weed all day every day just to cope.",
    "My OCD is flaring up, I check the stove like twenty times before leaving.",
    "I get these intense highs where I don't need sleep for days and then I crash.",
    "Sometimes I hear my name called when nobody is there.",
)

# One sentence, two criteria: the annotation file gets two rows with the same sentence_id.
TWO_SYMPTOMS: tuple[tuple[str, str, str], ...] = (
    (
        "I'm so exhausted I sleep {long_hours} hours and still can't get out of bed.",
        "FATIGUE",
        "SLEEP_ISSUES",
    ),
    (
        "I can't focus on anything and I feel like a complete failure because of it.",
        "COGNITIVE_ISSUES",
        "WORTHLESSNESS",
    ),
    (
        "I've lost {kg} {unit} because food tastes like nothing and I don't enjoy anything anymore.",
        "APPETITE_CHANGE",
        "ANHEDONIA",
    ),
    (
        "Everything feels empty and some nights I wish I just wouldn't wake up.",
        "DEPRESSED_MOOD",
        "SUICIDAL_THOUGHTS",
    ),
    (
        "I'm up until {time} every night and then I'm a zombie all day with no energy.",
        "SLEEP_ISSUES",
        "FATIGUE",
    ),
    (
        "I feel so sad and worthless, like I'm the reason everything goes wrong.",
        "DEPRESSED_MOOD",
        "WORTHLESSNESS",
    ),
    (
        "I move and talk so slowly now, and my head is so foggy I can't follow conversations.",
        "PSYCHOMOTOR",
        "COGNITIVE_ISSUES",
    ),
    ("I don't enjoy {hobby} anymore and honestly I'm just sad all the time.", "ANHEDONIA", "DEPRESSED_MOOD"),
)

# Paraphrases: (what the post says, what the annotator wrote). The annotation cannot be found in
# the post, not even after normalising whitespace or case; the pipeline must count these.
PARAPHRASES: dict[str, tuple[tuple[str, str], ...]] = {
    "DEPRESSED_MOOD": (
        (
            "Honestly I've been so low {dur}, like a weight on my chest.",
            "I have felt very down, like something heavy sits on me.",
        ),
        (
            "Most days I just feel like crying for no reason.",
            "I want to cry on most days without any reason.",
        ),
    ),
    "ANHEDONIA": (
        ("I quit {hobby} because it stopped being fun.", "I gave up my hobby since I no longer enjoy it."),
    ),
    "APPETITE_CHANGE": (
        (
            "Haven't really eaten properly in days, maybe a slice of {food}.",
            "I have barely eaten anything for several days.",
        ),
    ),
    "SLEEP_ISSUES": (
        (
            "I haven't slept more than {hours} hours a night in ages.",
            "I only sleep a few hours each night, for a long time now.",
        ),
    ),
    "PSYCHOMOTOR": (
        (
            "Everyone says I've gotten really sluggish, even walking.",
            "People tell me I move much slower than before.",
        ),
    ),
    "FATIGUE": (
        ("I'm wiped out constantly, no matter what I do.", "I am always exhausted whatever I am doing."),
    ),
    "WORTHLESSNESS": (
        ("Honestly I'm useless, everyone would agree.", "I think I am worthless and that others see it too."),
    ),
    "COGNITIVE_ISSUES": (
        (
            "Reading anything longer than a tweet is impossible now.",
            "I can no longer focus long enough to read.",
        ),
    ),
    "SUICIDAL_THOUGHTS": (
        (
            "I've been wondering lately whether anyone would miss me if I was gone.",
            "I keep asking myself if people would miss me after I die.",
        ),
    ),
}

# Why a clinician would mark a distractor absent (status 0): the explanation of its row.
OTHER_PERSON = "Describes someone else, not the poster."
SITUATIONAL = "Ordinary, situational experience; not a symptom."
FIGURATIVE = "Figure of speech; not evidence of the symptom."
MEDIA = "About a book, show or documentary, not the poster's own state."

# Sentences that touch a criterion's topic without being evidence for the poster, with the reason.
# They appear unannotated in many posts and, when a clinician considered them, as status-0 rows.
DISTRACTORS: dict[str, tuple[tuple[str, str], ...]] = {
    "DEPRESSED_MOOD": (
        ("My sister was sad for a bit after her hamster died but she's fine now.", OTHER_PERSON),
        ("The ending of {show} made me tear up, great finale though.", MEDIA),
        ("It's been raining all week and the sky is so gray, classic {city} weather.", FIGURATIVE),
        ("I watched a documentary about depression in teenagers, really interesting.", MEDIA),
    ),
    "ANHEDONIA": (
        ("I lost interest in {show} after season three, the writing got bad.", SITUATIONAL),
        ("My friend isn't into {hobby} anymore so I need a new buddy for it.", OTHER_PERSON),
        ("Honestly I don't care about football, never have.", SITUATIONAL),
    ),
    "APPETITE_CHANGE": (
        ("My {relative} eats like a horse and finished my fries too.", OTHER_PERSON),
        ("I'm trying to lose a few pounds before my cousin's wedding so I'm cutting sugar.", SITUATIONAL),
        ("We had {food} for dinner and I ate way too much, no regrets.", SITUATIONAL),
        ("My dog lost his appetite after the vet visit but he's eating normally again.", OTHER_PERSON),
    ),
    "SLEEP_ISSUES": (
        ("My brother sleeps a lot, lucky him.", OTHER_PERSON),
        ("I stayed up until {time} finishing a game on Saturday, totally worth it.", SITUATIONAL),
        ("The baby next door woke everyone up last night lol.", SITUATIONAL),
        ("My cat sleeps like eighteen hours a day and I'm jealous.", OTHER_PERSON),
    ),
    "PSYCHOMOTOR": (
        ("My roommate paces when he's on the phone, it's kind of funny.", OTHER_PERSON),
        ("The line at the DMV moved in slow motion today.", FIGURATIVE),
        ("I was fidgeting a lot before my {exam} but it went fine!", SITUATIONAL),
    ),
    "FATIGUE": (
        ("I was tired after the {race} but it felt amazing.", SITUATIONAL),
        ("My mom is exhausted from her night shifts at the hospital.", OTHER_PERSON),
        ("Long flight, I was wiped out for a day from the jet lag.", SITUATIONAL),
    ),
    "WORTHLESSNESS": (
        ("My coworker blamed me for the printer jam, which was honestly hilarious.", SITUATIONAL),
        ("I felt a bit guilty eating the last slice of cake, sorry {name}.", SITUATIONAL),
        ("My little brother thinks he's a failure at chess but he's only eight.", OTHER_PERSON),
    ),
    "COGNITIVE_ISSUES": (
        ("I can never decide what to order at restaurants, the menus are too long haha.", SITUATIONAL),
        ("Exams are next week so I've been cramming and my brain is full.", FIGURATIVE),
        ("My grandpa forgets names a lot but he's 91 so that's fair.", OTHER_PERSON),
    ),
    "SUICIDAL_THOUGHTS": (
        ("My favourite character dies in the last book and I'm still not over it.", MEDIA),
        ("I'm reading a history book about the plague, so much death.", MEDIA),
        ("Ugh, this commute is killing me, two hours each way.", FIGURATIVE),
        ("My dog would die for a piece of cheese, he's so dramatic.", FIGURATIVE),
    ),
}

# Everyday sentences with no clinical content: work, hobbies, questions to the subreddit.
FILLERS: tuple[str, ...] = (
    "I work as a {job} and my shift usually starts at {clock}.",
    "My {relative} is visiting next {weekday}, so I need to clean the apartment.",
    "Does anyone have tips for {tip_topic}?",
    "I've been trying to get into {hobby} lately.",
    "We adopted a {pet} named {name} last {season}.",
    "Throwaway account since I don't want {people} to find this.",
    "I don't really know why I'm posting this, I guess I just need to write it down.",
    "Sorry for the formatting, I'm on mobile.",
    "Thanks for reading if you made it this far.",
    "I'm {age} and I live with {housemates} in a small apartment.",
    "Yesterday I went to the café near my place and had the best croissant.",
    "The weather in {city} has been weird, sunny one day and freezing the next.",
    "My {relative} keeps sending me memes at 7am lol.",
    "I'm studying {subject} at a community college.",
    "Work has been busy because we're short on staff this month.",
    "My car broke down again, so I've been taking the bus.",
    "I started watching {show} because a friend kept recommending it.",
    "Has anyone here tried {app}? Is it worth paying for?",
    "I cooked {dish} for the first time and it actually turned out okay.",
    "We have a family dinner every Sunday at my {relative}'s house.",
    "I moved to {city} about {num_years} years ago for a job.",
    "My phone screen cracked last week, of course.",
    "Anyway, that's the background.",
    "I'm not sure if this is the right subreddit for this.",
    "Edit: thank you all for the kind replies, I read every one ❤️.",
    "Some context: I'm {age}, I work full time and I rent a room downtown.",
    "I have a {exam} on {weekday} that I've been preparing for.",
    "My manager, {name}, is actually pretty understanding.",
    "I took the train to visit my grandparents over the holidays.",
    "There's a new bakery on my street that sells amazing pão de queijo.",
    'My friend {name} said "you should post about it" so here I am.',
    "I've been listening to a lot of {genre} lately.",
    "My rent went up again, which is great, obviously.",
    "I'm trying to save up for a trip to {destination}.",
    "I've been seeing a counselor every other {weekday} since {month}.",
    "Not sure what I'm asking for, maybe just advice?",
    "We had a fire drill at work and everyone stood outside in the cold for an hour.",
    "My niece just turned {kid_age} and the party was chaos, in a good way.",
    "I finally fixed the leaky faucet with a YouTube tutorial.",
    "The bus was late again this morning, so I walked, which was nice.",
    "My {relative} makes the best {dish}, I should ask for the recipe.",
    "I bought a plant for my desk, her name is Fernanda.",
    "My laptop is from 2014 and sounds like a jet engine.",
    "We're planning a road trip to the coast in {month}.",
    "Does anyone else here work nights? How do you handle it?",
    "My neighbour plays the trumpet, badly, every evening.",
    "I volunteer at an animal shelter on {weekday}s.",
    "Quick question for people who have been through this: how did you tell your family?",
    "I grew up in a small town, like one-traffic-light small.",
    "I have a job interview next week for a {job} position.",
    "The café downstairs has a new barista, {name}, who remembers everyone\u2019s order.",
    "I read somewhere that writing things down helps, so here goes.",
    "My mum's side of the family is from {country}, and we visit every few years.",
    "Long story short, I switched majors twice.",
    "My {pet} knocked a glass off the table at 2am, classic.",
    "I've been meaning to call my old teacher, {name}, for months.",
    "We finally painted the living room, it's a sort of sage green.",
    "I got a parking ticket outside the library, which feels unfair.",
    "My {relative} is getting married in {month}, and I'm a bridesmaid, or a groomsman, I forget.",
    "I tried the new ramen place in {city} and the broth was incredible.",
    "Our team lost the pub quiz by one point, on a question about volcanoes.",
    "I started a spreadsheet to track my budget, very exciting stuff.",
    "My grandmother, who's 88, still beats everyone at Scrabble.",
    "Honestly, the group chat has been nothing but photos of {name}'s new puppy.",
    "Last weekend we went to a farmers market and I bought way too many peaches.",
    "My {relative} just started learning to code and keeps asking me questions I can't answer.",
    "The wifi in our building has been down twice this week, which is a whole saga.",
    "I've been following a sourdough recipe from {country}, with mixed results.",
    "For background, I was a pretty average student and now I work as a {job}.",
    "I went to a friend's birthday at a bowling alley and somehow won a round.",
    "We're trying to decide whether to renew the lease or move somewhere cheaper.",
    "My {pet} has a vet appointment on {weekday}, just a checkup.",
    "I joined a five-a-side football team at work, we are terrible but it's fun.",
    "Someone in my building keeps stealing packages, so now I pick everything up at the post office.",
    "I'm writing this on my lunch break, so sorry if it's a bit all over the place.",
    "My roommate and I are watching every {show} episode in order, slowly.",
    "I've been thinking about going back to school for {subject} next year.",
    "The heating broke in January and the landlord took two weeks to fix it.",
    "I don't post much, I mostly lurk here.",
    "My {relative} visited {destination} last summer and won't stop talking about it.",
)

# Status-1 explanations, worded to fit every template of their criterion.
EXPLANATIONS: dict[str, tuple[str, ...]] = {
    "DEPRESSED_MOOD": (
        "Post states persistent sadness.",
        "Describes feeling empty, sad or hopeless most days.",
        "Reports low mood nearly every day.",
    ),
    "ANHEDONIA": (
        "Reports loss of interest in previously enjoyed activities.",
        "Describes no pleasure in usual activities.",
        "States that nothing feels enjoyable anymore.",
    ),
    "APPETITE_CHANGE": (
        "Reports a marked change in appetite or weight.",
        "Describes eating much less or much more than usual.",
        "States a significant change in eating.",
    ),
    "SLEEP_ISSUES": (
        "Describes disturbed sleep, too little or too much.",
        "Reports a persistent sleep problem.",
        "States sleep is disrupted most nights.",
    ),
    "PSYCHOMOTOR": (
        "Describes slowed or restless movement.",
        "Reports a change in movement or speech.",
        "States psychomotor slowing or agitation.",
    ),
    "FATIGUE": (
        "Reports constant tiredness and low energy.",
        "Describes exhaustion after minimal effort.",
        "States loss of energy nearly every day.",
    ),
    "WORTHLESSNESS": (
        "Expresses feelings of worthlessness or excessive guilt.",
        "Describes a harshly negative view of self.",
        "Reports strong self-blame.",
    ),
    "COGNITIVE_ISSUES": (
        "Reports difficulty concentrating or deciding.",
        "Describes impaired focus in daily tasks.",
        "States thinking feels slowed and unclear.",
    ),
    "SUICIDAL_THOUGHTS": (
        "Expresses passive suicidal ideation.",
        "Reports recurrent thoughts of death or not wanting to live.",
        "Describes thoughts about dying.",
    ),
    SPECIAL_CASE: (
        "Clinically relevant but outside the nine DSM-5 depression criteria.",
        "Relevant symptom not covered by the DSM-5 depression criteria.",
    ),
}

# Share of rows whose explanation the clinician left empty.
EMPTY_EXPLANATION_RATE = 0.05


# --------------------------------------------------------------------------------------------
# Plan and result types
# --------------------------------------------------------------------------------------------
@dataclass
class Spec:
    """What one planned sentence must be, before any text is drawn."""

    kind: str  # "evidence" | "two" | "special" | "absent" | "paraphrase" | "distractor"
    criterion: str = ""  # the criterion for evidence / absent / paraphrase / distractor
    whitespace: str = ""  # "" | "double" | "newline": how the post's copy differs from sentence_text


@dataclass
class Sentence:
    """One realised sentence: its copy in the post, its annotated form and its rows."""

    in_post: str
    annotated: str
    labels: list[tuple[str, int, str]] = field(default_factory=list)  # (symptom, status, explanation)


@dataclass
class PostPlan:
    """Everything decided for one post before its text is drawn."""

    post_id: str
    kind: str  # "none" | "normal" | "long" | "absent_only"
    specs: list[Spec] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Drawing text
# --------------------------------------------------------------------------------------------
def fill(rng: random.Random, *templates: str, preset: dict[str, str] | None = None) -> tuple[str, ...]:
    """Fill the slots of one or more templates, sharing one value per slot name across them.

    Slots are visited in order of appearance so the RNG stream does not depend on any hashing.
    ``preset`` pins some slots (a post's city, age, job) so one post does not contradict itself.
    """
    values: dict[str, str] = dict(preset or {})
    for template in templates:
        for _, name, _, _ in string.Formatter().parse(template):
            if name and name not in values:
                values[name] = rng.choice(SLOTS[name])
    return tuple(template.format(**values) for template in templates)


def explanation(rng: random.Random, label: str) -> str:
    """Draw a short clinician-style status-1 explanation, sometimes left empty as in the real data."""
    return maybe_empty(rng, rng.choice(EXPLANATIONS[label]))


def maybe_empty(rng: random.Random, text: str) -> str:
    """Return ``text``, or an empty explanation at ``EMPTY_EXPLANATION_RATE``."""
    return "" if rng.random() < EMPTY_EXPLANATION_RATE else text


def break_whitespace(rng: random.Random, text: str, how: str) -> str:
    """Return ``text`` with one inner space turned into a double space or a line break."""
    spaces = [i for i, ch in enumerate(text) if ch == " "]
    # Avoid the first and last gaps so the change sits inside the sentence, not at its edges.
    inner = spaces[1:-1] or spaces
    pos = rng.choice(inner)
    return text[:pos] + ("  " if how == "double" else "\n") + text[pos + 1 :]


def realise(rng: random.Random, spec: Spec) -> Sentence:
    """Draw the text and the annotation rows of one planned sentence."""
    if spec.kind == "evidence":
        (text,) = fill(rng, rng.choice(EVIDENCE[spec.criterion]))
        sentence = Sentence(text, text, [(spec.criterion, 1, explanation(rng, spec.criterion))])
    elif spec.kind == "two":
        template, first, second = rng.choice(TWO_SYMPTOMS)
        (text,) = fill(rng, template)
        rows = [(first, 1, explanation(rng, first)), (second, 1, explanation(rng, second))]
        sentence = Sentence(text, text, rows)
    elif spec.kind == "special":
        (text,) = fill(rng, rng.choice(SPECIAL))
        sentence = Sentence(text, text, [(SPECIAL_CASE, 1, explanation(rng, SPECIAL_CASE))])
    elif spec.kind == "paraphrase":
        in_post, annotated = fill(rng, *rng.choice(PARAPHRASES[spec.criterion]))
        sentence = Sentence(in_post, annotated, [(spec.criterion, 1, explanation(rng, spec.criterion))])
    elif spec.kind == "absent":
        template, why = rng.choice(DISTRACTORS[spec.criterion])
        (text,) = fill(rng, template)
        sentence = Sentence(text, text, [(spec.criterion, 0, maybe_empty(rng, why))])
    elif spec.kind == "distractor":
        (text,) = fill(rng, rng.choice(DISTRACTORS[spec.criterion])[0])
        sentence = Sentence(text, text)
    else:  # pragma: no cover - the planner only emits the kinds above
        raise ValueError(f"unknown spec kind {spec.kind!r}")
    if spec.whitespace:
        sentence.in_post = break_whitespace(rng, sentence.in_post, spec.whitespace)
    return sentence


def word_count(text: str) -> int:
    """Count whitespace-separated words, the unit the README and the counts use."""
    return len(text.split())


def filler_stream(rng: random.Random) -> list[str]:
    """Shuffle a copy of the filler templates, so a post only repeats one after using them all."""
    order = list(FILLERS)
    rng.shuffle(order)
    return order


def build_post(rng: random.Random, plan: PostPlan, post_index: int) -> tuple[str, list[Sentence]]:
    """Draw the text of one post and return it with its sentences in post order."""
    specials: list[Sentence] = []
    for spec in plan.specs:
        # Redraw on a clash so one sentence_text never appears twice in a post (it would make
        # locating ambiguous and break the "whitespace differs" guarantee).
        for _ in range(50):
            sentence = realise(rng, spec)
            if all(normalise(sentence.in_post) != normalise(other.in_post) for other in specials):
                break
        specials.append(sentence)

    if plan.kind == "long":
        target = rng.randint(LONG_MIN_WORDS + 60, LONG_MAX_WORDS - 120)
    else:
        target = rng.randint(60, 360)
    target -= sum(word_count(s.in_post) for s in specials)

    # One city, age, job... per post: the poster's background stays the same across fillers.
    preset = {name: rng.choice(SLOTS[name]) for name in PER_POST_SLOTS}
    fillers: list[Sentence] = []
    stream: list[str] = []
    words = 0
    while words < target:
        if not stream:
            stream = filler_stream(rng)
        (text,) = fill(rng, stream.pop(), preset=preset)
        fillers.append(Sentence(text, text))
        words += word_count(text)

    sentences = place(rng, plan, post_index, fillers, specials)
    return join(rng, sentences), sentences


def place(
    rng: random.Random, plan: PostPlan, post_index: int, fillers: list[Sentence], specials: list[Sentence]
) -> list[Sentence]:
    """Insert the planned sentences among the fillers.

    Long posts cycle through three layouts so that evidence lands early, in the middle and at the
    very end, including posts whose evidence only starts beyond a 512-token window.
    """
    sentences = list(fillers)
    annotated = [s for s in specials if s.labels]
    plain = [s for s in specials if not s.labels]
    if plan.kind == "long" and annotated:
        n = len(sentences)
        layout = post_index % 3
        for i, sentence in enumerate(annotated):
            if layout == 0:  # everything late: in the last quarter of the post
                pos = rng.randint(n * 3 // 4, n)
            elif layout == 1:  # spread: first near the start, last at the very end
                if i == 0:
                    pos = rng.randint(0, n // 5)
                elif i == len(annotated) - 1:
                    pos = n
                else:
                    pos = rng.randint(n // 3, 2 * n // 3)
            else:  # last one is the closing sentence, the others anywhere
                pos = n if i == len(annotated) - 1 else rng.randint(0, n)
            sentences.insert(min(pos, len(sentences)), sentence)
            n = len(sentences)
        for sentence in plain:
            sentences.insert(rng.randint(0, len(sentences)), sentence)
    else:
        for sentence in specials:
            sentences.insert(rng.randint(0, len(sentences)), sentence)
    return sentences


def join(rng: random.Random, sentences: list[Sentence]) -> str:
    """Join sentences into post text: spaces, with paragraph breaks in about half the posts."""
    paragraphs = rng.random() < 0.55
    parts: list[str] = []
    since_break = 0
    for i, sentence in enumerate(sentences):
        if i:
            since_break += 1
            if paragraphs and since_break >= 3 and rng.random() < 0.3:
                parts.append("\n\n" if rng.random() < 0.8 else "\n")
                since_break = 0
            else:
                parts.append(" ")
        parts.append(sentence.in_post)
    return "".join(parts)


# --------------------------------------------------------------------------------------------
# Planning: quotas decided up front so every awkward case is present at any post count
# --------------------------------------------------------------------------------------------
def new_post_id(rng: random.Random, taken: set[str]) -> str:
    """Draw a Reddit-looking id (``s_`` + 6 lowercase alphanumerics) not used yet."""
    while True:
        post_id = "s_" + "".join(rng.choice(ID_ALPHABET) for _ in range(6))
        if post_id not in taken:  # membership only: set order never influences the output
            taken.add(post_id)
            return post_id


def pick_criterion(rng: random.Random) -> str:
    """Draw one criterion with the sample's label weights."""
    return rng.choices(CRITERIA, weights=CRITERION_WEIGHTS, k=1)[0]


def plan_posts(rng: random.Random, n_posts: int) -> list[PostPlan]:
    """Decide every post's kind and the sentences it must contain."""
    n_none = round(n_posts * 0.25)
    n_long = max(1, round(n_posts / 24))
    n_absent_only = max(1, round(n_posts / 80))
    n_normal = n_posts - n_none - n_long - n_absent_only
    if n_normal < 1:
        raise ValueError(f"--posts must be at least {MIN_POSTS}")
    kinds = ["none"] * n_none + ["long"] * n_long + ["absent_only"] * n_absent_only + ["normal"] * n_normal
    rng.shuffle(kinds)

    taken: set[str] = set()
    plans = [PostPlan(new_post_id(rng, taken), kind) for kind in kinds]

    for plan in plans:
        if plan.kind in ("normal", "long"):
            n_evidence = (
                rng.randint(2, 5) if plan.kind == "long" else rng.choices((1, 2, 3, 4), (35, 30, 20, 15))[0]
            )
            chosen: list[str] = []
            for _ in range(n_evidence):
                criterion = pick_criterion(rng)
                # Mostly distinct criteria per post, but a repeated criterion happens in real posts.
                if criterion in chosen and rng.random() < 0.85:
                    criterion = pick_criterion(rng)
                chosen.append(criterion)
            plan.specs.extend(Spec("evidence", c) for c in chosen)
        elif plan.kind == "absent_only":
            plan.specs.extend(Spec("absent", pick_criterion(rng)) for _ in range(rng.randint(1, 2)))
        # Unannotated distractors: topic words with no evidence, also in posts without symptoms.
        if plan.kind == "none":
            n_distractors = rng.randint(0, 2)
        elif plan.kind == "long":
            n_distractors = rng.randint(1, 3)
        else:
            n_distractors = int(rng.random() < 0.3)
        plan.specs.extend(Spec("distractor", pick_criterion(rng)) for _ in range(n_distractors))

    symptomatic = [p for p in plans if p.kind in ("normal", "long")]

    def add_to_random_posts(count: int, kind: str) -> None:
        """Append ``count`` specs of ``kind`` to symptomatic posts, distinct posts first."""
        for i in range(count):
            if i % len(symptomatic) == 0:
                rng.shuffle(symptomatic)
            criterion = pick_criterion(rng) if kind == "absent" else ""
            symptomatic[i % len(symptomatic)].specs.append(Spec(kind, criterion))

    add_to_random_posts(max(1, round(n_posts / 24)), "two")
    add_to_random_posts(max(1, round(n_posts / 16)), "special")

    positive_rows = sum(
        2 if s.kind == "two" else 1
        for p in plans
        for s in p.specs
        if s.kind in ("evidence", "two", "special")
    )
    absent_rows = sum(1 for p in plans for s in p.specs if s.kind == "absent")
    # Status 0 at about 10% of all rows: absent / (positive + absent) ~= 0.1.
    add_to_random_posts(max(1, round(positive_rows / 9) - absent_rows), "absent")

    total_rows = positive_rows + sum(1 for p in plans for s in p.specs if s.kind == "absent")
    evidence_specs = [s for p in plans for s in p.specs if s.kind == "evidence"]
    for spec in rng.sample(evidence_specs, max(1, round(total_rows * 0.01))):
        spec.kind = "paraphrase"

    # Whitespace differences on ~4% of the annotated sentences, alternating the two variants.
    annotated_specs = [
        s for p in plans for s in p.specs if s.kind in ("evidence", "two", "special", "absent")
    ]
    for i, spec in enumerate(rng.sample(annotated_specs, max(2, round(len(annotated_specs) * 0.04)))):
        spec.whitespace = "double" if i % 2 == 0 else "newline"

    # Shuffle each post's specs so the kinds are not always in the same order within a post.
    for plan in plans:
        rng.shuffle(plan.specs)
    return plans


# --------------------------------------------------------------------------------------------
# Generation, checks and counts
# --------------------------------------------------------------------------------------------
def normalise(text: str) -> str:
    """Collapse whitespace and case, the most forgiving exact match a locator would try."""
    return " ".join(text.split()).casefold()


Row = tuple[str, str, str, str, str, str]


def new_counts(n_posts: int) -> dict[str, int | float]:
    """Start the counts printed at the end, in print order."""
    counts: dict[str, int | float] = {"posts": n_posts, "annotation_rows": 0}
    for key in (
        "posts_without_rows",
        "posts_with_only_status0_rows",
        "long_posts",
        "long_posts_min_words",
        "long_posts_max_words",
        "long_posts_with_evidence_in_last_10pct",
        "long_posts_with_first_evidence_after_word_400",
        "status0_rows",
        "special_case_rows",
        "two_symptom_sentences",
        "sentence_text_exact_substring",
        "sentence_text_whitespace_mismatch",
        "sentence_text_not_locatable",
        "posts_with_non_ascii",
        "posts_with_double_quote",
        "posts_with_comma",
        "posts_with_newline",
        "rows_with_empty_explanation",
    ):
        counts[key] = 0
    return counts


def curl_apostrophes(text: str, sentences: list[Sentence]) -> str:
    """Turn straight apostrophes into curly ones in a post and its sentences, as phones type them."""
    for sentence in sentences:
        sentence.annotated = sentence.annotated.replace("'", "\u2019")
        sentence.in_post = sentence.in_post.replace("'", "\u2019")
    return text.replace("'", "\u2019")


def check_length(plan: PostPlan, words: int) -> None:
    """Fail loudly if a post's length does not match its planned kind (long or not)."""
    if plan.kind == "long" and not LONG_MIN_WORDS <= words <= LONG_MAX_WORDS:
        raise AssertionError(f"long post {plan.post_id} has {words} words")
    if plan.kind != "long" and words >= LONG_MIN_WORDS:
        raise AssertionError(f"post {plan.post_id} has {words} words but is not planned as long")


def annotate(
    plan: PostPlan, text: str, sentences: list[Sentence], counts: dict[str, int | float]
) -> list[Row]:
    """Build the annotation rows of one post and add what they contain to ``counts``."""
    rows: list[Row] = []
    evidence_offsets: list[int] = []
    search_from = 0
    for n, sentence in enumerate(sentences):
        # Sentences appear in order, so searching on from the previous one finds this one's copy.
        start = text.find(sentence.in_post, search_from)
        search_from = start + len(sentence.in_post)
        if not sentence.labels:
            continue
        evidence_offsets.append(word_count(text[:start]))
        if sentence.annotated in text:
            counts["sentence_text_exact_substring"] += 1
        elif normalise(sentence.annotated) in normalise(text):
            counts["sentence_text_whitespace_mismatch"] += 1
        else:
            counts["sentence_text_not_locatable"] += 1
        counts["two_symptom_sentences"] += len(sentence.labels) == 2
        for symptom, status, why in sentence.labels:
            rows.append((plan.post_id, f"{plan.post_id}_{n}", sentence.annotated, symptom, str(status), why))
            counts["status0_rows"] += status == 0
            counts["special_case_rows"] += symptom == SPECIAL_CASE
            counts["rows_with_empty_explanation"] += why == ""

    statuses = [row[4] for row in rows]
    counts["posts_without_rows"] += not rows
    counts["posts_with_only_status0_rows"] += bool(rows) and "1" not in statuses
    if plan.kind == "long":
        words = word_count(text)
        counts["long_posts_with_evidence_in_last_10pct"] += max(evidence_offsets) >= 0.9 * words
        counts["long_posts_with_first_evidence_after_word_400"] += min(evidence_offsets) > WINDOW_WORDS
    counts["posts_with_non_ascii"] += not text.isascii()
    counts["posts_with_double_quote"] += '"' in text or "\u201c" in text
    counts["posts_with_comma"] += "," in text
    counts["posts_with_newline"] += "\n" in text
    return rows


def summarise(counts: dict[str, int | float], words: list[int], rows: list[Row]) -> None:
    """Add the length statistics and per-label row counts once every post is drawn."""
    long_words = [w for w in words if w >= LONG_MIN_WORDS]
    short_words = [w for w in words if w < LONG_MIN_WORDS]
    counts["annotation_rows"] = len(rows)
    counts["long_posts"] = len(long_words)
    counts["long_posts_min_words"] = min(long_words)
    counts["long_posts_max_words"] = max(long_words)
    counts["mean_words_all_posts"] = round(sum(words) / len(words), 1)
    counts["mean_words_excluding_long"] = round(sum(short_words) / len(short_words), 1)
    counts["max_words"] = max(words)
    for label in (*CRITERIA, SPECIAL_CASE):
        counts[f"status1_rows_{label}"] = sum(1 for r in rows if r[3] == label and r[4] == "1")


def generate(out_dir: Path, seed: int = DEFAULT_SEED, n_posts: int = DEFAULT_POSTS) -> dict[str, int | float]:
    """Write both CSV files into ``out_dir`` and return the counts of what they contain.

    Args:
        out_dir: folder to write into; created if missing.
        seed: seed of the only random stream used; same seed, same bytes.
        n_posts: number of posts; at least ``MIN_POSTS`` so every awkward case fits.

    Returns:
        The counts printed by ``main``, in print order.
    """
    if n_posts < MIN_POSTS:
        raise ValueError(f"--posts must be at least {MIN_POSTS}, got {n_posts}")
    rng = random.Random(seed)
    plans = plan_posts(rng, n_posts)

    counts = new_counts(n_posts)
    post_rows: list[tuple[str, str]] = []
    annotation_rows: list[Row] = []
    words: list[int] = []
    for index, plan in enumerate(plans):
        text, sentences = build_post(rng, plan, index)
        if rng.random() < 0.15:
            text = curl_apostrophes(text, sentences)
        words.append(word_count(text))
        check_length(plan, words[-1])
        post_rows.append((plan.post_id, text))
        annotation_rows.extend(annotate(plan, text, sentences, counts))
    summarise(counts, words, annotation_rows)

    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / POSTS_FILE, POSTS_HEADER, post_rows)
    write_csv(out_dir / ANNOTATIONS_FILE, ANNOTATIONS_HEADER, annotation_rows)
    counts["posts_csv_bytes"] = (out_dir / POSTS_FILE).stat().st_size
    counts["annotations_csv_bytes"] = (out_dir / ANNOTATIONS_FILE).stat().st_size
    return counts


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """Write header + rows as UTF-8 CSV with minimal quoting and LF line ends.

    A fixed LF terminator keeps the bytes identical on every platform (the csv default is CRLF),
    which the reproducibility test relies on.
    """
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, quoting=csv.QUOTE_MINIMAL, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(
        description="Generate the SYNTHETIC RedSM5-shaped sample (not real data)."
    )
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"output folder (default {DEFAULT_OUT})"
    )
    parser.add_argument(
        "--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default {DEFAULT_SEED})"
    )
    parser.add_argument(
        "--posts",
        type=int,
        default=DEFAULT_POSTS,
        help=f"number of posts, >= {MIN_POSTS} (default {DEFAULT_POSTS})",
    )
    args = parser.parse_args(argv)
    if args.posts < MIN_POSTS:
        parser.error(f"--posts must be at least {MIN_POSTS}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Generate the sample and print what it contains."""
    args = parse_args(argv)
    counts = generate(args.out, args.seed, args.posts)
    print(f"SYNTHETIC RedSM5-shaped sample written to {args.out} (seed {args.seed}); not real Reddit data.")
    width = max(len(key) for key in counts)
    for key, value in counts.items():
        print(f"  {key:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
