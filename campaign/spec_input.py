"""Reading a spec's YAML safely: bounded in size after aliases, and no key written twice.

Aliases stay allowed (``&crs`` / ``*crs`` to repeat a structure source is a fair use), but the
document is measured as if every alias were written out, on the composed node graph and before
any Python object is built, so a few lines of nested aliases (a "billion laughs") are refused
in milliseconds instead of expanding into gigabytes in the labeler settings, the task keys, the
launch record and the error messages. A key written twice in one mapping is an error naming
the key and both lines, where PyYAML would silently keep the last value.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from campaign.errors import SpecError

# One unit per node and per character of every scalar, counted with aliases expanded. Real
# specs are a few thousand units; ten thousand structure sources would be about two million.
MAX_EXPANDED_SIZE = 2_000_000
MAX_DEPTH = 64
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses a key written twice in one mapping (merged ``<<`` keys may be
    overridden, as YAML intends)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, MappingNode):
            seen: dict[Any, Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == _MERGE_TAG:
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: BaseConstructor reports it
                    continue
                if first is not key_node:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r} (first on line {first.start_mark.line + 1})",
                        key_node.start_mark)
        return super().construct_mapping(node, deep=deep)


def expanded_size(root: Node, limit: int = MAX_EXPANDED_SIZE, max_depth: int = MAX_DEPTH) -> int:
    """The size of the document with every alias written out (nodes + scalar characters);
    shared nodes are measured once, so this costs time linear in the file, not in the expansion."""
    sizes: dict[int, int] = {}
    active: set[int] = set()

    def measure(node: Node, depth: int) -> int:
        ident = id(node)
        if ident in sizes:
            return sizes[ident]
        if ident in active:
            raise ValueError(f"line {node.start_mark.line + 1}: an alias refers to the node that contains it")
        if depth > max_depth:
            raise ValueError(f"line {node.start_mark.line + 1}: nested deeper than {max_depth} levels")
        if isinstance(node, ScalarNode):
            size = 1 + len(node.value)
        else:
            active.add(ident)
            children = node.value if isinstance(node, SequenceNode) else [n for pair in node.value for n in pair]
            size = 1
            for child in children:
                size += measure(child, depth + 1)
                if size > limit:  # stop at once; the total only grows from here
                    break
            active.discard(ident)
        sizes[ident] = size
        return size

    return measure(root, 0)


def read_yaml(text: str, source: str) -> Any:
    """Parse one YAML document, refusing duplicate keys and documents that expand past
    MAX_EXPANDED_SIZE; every problem is a SpecError naming ``source`` and the line."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        size = expanded_size(node)
        if size > MAX_EXPANDED_SIZE:
            raise SpecError(f"{source}: too large: more than {MAX_EXPANDED_SIZE:,} nodes and characters with its "
                            "aliases (&name / *name) written out, where a spec is a few thousand; nested "
                            "aliases multiply what they repeat")
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        raise SpecError(f"{source}: {_describe(exc)}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: not valid YAML: {exc}") from None
    except ValueError as exc:
        raise SpecError(f"{source}: {exc}") from None
    except RecursionError:
        raise SpecError(f"{source}: nested too deeply to read") from None
    finally:
        loader.dispose()


def _describe(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
    what = " ".join(p for p in (exc.context, exc.problem) if p)
    if isinstance(exc, yaml.constructor.ConstructorError) and "duplicate key" in (exc.problem or ""):
        return f"{where}{exc.problem}"
    return f"not valid YAML: {where}{what}"
