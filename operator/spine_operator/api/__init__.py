"""The API of Spine: pydantic models of every kind's spec and status, and the kind registry.

`KINDS` lists each kind with its names and models; the CRD generator (`crdgen.py`), the handlers
and `spine render` all read it, so a new kind only adds a model module and one entry.
"""

from spine_operator.api.kinds import GROUP, KINDS, VERSION, KindInfo, kind_by_name

__all__ = ["GROUP", "KINDS", "VERSION", "KindInfo", "kind_by_name"]
