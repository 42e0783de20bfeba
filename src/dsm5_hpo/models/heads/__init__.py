"""Task heads on top of the shared encoder."""

from dsm5_hpo.models.heads.criteria import CriteriaHead
from dsm5_hpo.models.heads.evidence import EvidenceHead

__all__ = ["CriteriaHead", "EvidenceHead"]
