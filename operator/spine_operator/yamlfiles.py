"""Reading the YAML a user hands to `spine render` and `spine up`, as strictly as kubectl would.

A file is at most `MAX_FILE_BYTES`; a mapping with a key twice is refused (YAML would silently
keep the last value); aliases may not expand a document beyond `MAX_NODES` values (an alias
bomb of a few lines would otherwise exhaust memory once the document is walked).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MAX_FILE_BYTES = 4 * 1024 * 1024
MAX_NODES = 200_000  # values in one document, every alias counted as often as it is used


class YamlError(ValueError):
    """A file that is not YAML a Kubernetes object can come from; the message says why."""


class _StrictLoader(yaml.SafeLoader):
    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                line = key_node.start_mark.line + 1
                raise YamlError(f"line {line}: key {key!r} appears twice in one mapping")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def expanded_size(document: Any, limit: int = MAX_NODES) -> int:
    """How many values the document holds with every shared (aliased) part counted each time."""
    sizes: dict[int, int] = {}

    def size(value: Any) -> int:
        if not isinstance(value, (dict, list)):
            return 1
        if id(value) in sizes:
            return sizes[id(value)]
        children = value.values() if isinstance(value, dict) else value
        total = 1
        for child in children:
            total += size(child)
            if total > limit:
                raise YamlError(f"the document expands to more than {limit} values (YAML aliases?)")
        sizes[id(value)] = total
        return total

    return size(document)


def load_documents(file: Path) -> list[Any]:
    """Every document of the file, or YamlError naming the problem."""
    try:
        with file.open("rb") as stream:
            data = stream.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise YamlError(f"cannot read: {error.strerror or error}") from None
    if len(data) > MAX_FILE_BYTES:
        raise YamlError(f"larger than {MAX_FILE_BYTES // (1024 * 1024)} MiB")
    try:
        documents = list(yaml.load_all(data, Loader=_StrictLoader))
    except yaml.YAMLError as error:
        raise YamlError(f"not valid YAML: {error}") from None
    for document in documents:
        expanded_size(document)
    return documents


def load_document(data: bytes | str) -> Any:
    """One YAML document from bytes, as strictly as `load_documents` reads a file (no duplicate
    keys, aliases bounded); specs.py reads the API specs users register with it."""
    try:
        document = yaml.load(data, Loader=_StrictLoader)
    except yaml.YAMLError as error:
        raise YamlError(f"not valid YAML: {error}") from None
    expanded_size(document)
    return document
