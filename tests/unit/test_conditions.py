"""Condition merging keeps lastTransitionTime unless the status flips; readiness reads status."""

from spine_operator import conditions as cond
from spine_operator.readiness import statefulset_ready


def test_transition_time_moves_only_when_status_flips() -> None:
    first = cond.merge_conditions(
        [], [cond.condition("Ready", False, "Progressing", "a", 1)], timestamp="t1"
    )
    same = cond.merge_conditions(
        first, [cond.condition("Ready", False, "Other", "b", 2)], timestamp="t2"
    )
    assert same[0]["lastTransitionTime"] == "t1" and same[0]["reason"] == "Other"
    flipped = cond.merge_conditions(
        same, [cond.condition("Ready", True, "Reconciled", "c", 2)], timestamp="t3"
    )
    assert flipped[0]["lastTransitionTime"] == "t3" and flipped[0]["observedGeneration"] == 2


def test_other_types_are_kept_and_sorted() -> None:
    merged = cond.merge_conditions(
        [{"type": "Zeta", "status": "True", "reason": "r", "message": ""}],
        [cond.condition("Alpha", True, "r", "", None)],
        timestamp="t",
    )
    assert [c["type"] for c in merged] == ["Alpha", "Zeta"]
    assert cond.is_true(merged, "Alpha") and not cond.is_true(merged, "Missing")


def sts(generation=1, observed=1, ready=1, current="a", update="a") -> dict:
    return {
        "metadata": {"generation": generation},
        "spec": {"replicas": 1},
        "status": {
            "observedGeneration": observed,
            "readyReplicas": ready,
            "currentRevision": current,
            "updateRevision": update,
        },
    }


def test_statefulset_readiness() -> None:
    assert statefulset_ready(sts())[0]
    assert not statefulset_ready(None)[0]
    assert not statefulset_ready(sts(ready=0))[0]
    assert "not seen" in statefulset_ready(sts(generation=2))[1]
    assert "rolling" in statefulset_ready(sts(update="b"))[1]
