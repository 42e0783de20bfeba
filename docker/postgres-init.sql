-- docker/docker-compose.yml (profile scale) runs this once, when the postgres-data volume is new.
-- POSTGRES_DB creates `optuna` (the Optuna storage); MLflow gets a database of its own because both
-- keep their schema version in a table named alembic_version.
CREATE DATABASE mlflow;
