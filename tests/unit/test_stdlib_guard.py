"""`operator/` is a folder, not a package: it must never shadow the standard library module."""

import operator
import sysconfig
from pathlib import Path


def test_import_operator_is_the_standard_library() -> None:
    assert Path(operator.__file__).parent == Path(sysconfig.get_paths()["stdlib"])
    assert operator.itemgetter(1)([0, 42]) == 42
