"""The multi-document YAML stream Helm hands a post-renderer, split so that untouched documents pass verbatim.

Documents are split on their `---` lines rather than parsed and dumped back: what the post-renderer does not
change reaches Helm byte for byte (comments, key order, quoting, Helm 4's filename annotation), and dumping is
the slow half of PyYAML. YAML forbids a `---` at the start of a line inside a scalar, so the split is exact.
"""

from typing import Any, NamedTuple

import yaml

from tenant_postrender.violations import Violation

Manifest = dict[str, Any]

# libyaml when the wheel has it: an order of magnitude faster than the pure-Python parser.
_Loader: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_Dumper: type[yaml.SafeDumper] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

HOOK_ANNOTATION = "helm.sh/hook"


class Document(NamedTuple):
    """One Kubernetes object of the stream, with the text it was written as."""

    text: str
    manifest: Manifest

    @property
    def subject(self) -> str:
        return subject_of(self.manifest)

    @property
    def is_hook(self) -> bool:
        return HOOK_ANNOTATION in annotations_of(self.manifest)


def name_of(manifest: Manifest) -> object:
    metadata = manifest.get("metadata")
    return metadata.get("name") if isinstance(metadata, dict) else None


def subject_of(manifest: Manifest) -> str:
    return f"{manifest.get('kind')}/{name_of(manifest)}"


def labels_of(manifest: Manifest) -> dict[str, Any]:
    return _metadata_map(manifest, "labels")


def annotations_of(manifest: Manifest) -> dict[str, Any]:
    return _metadata_map(manifest, "annotations")


def _metadata_map(manifest: Manifest, key: str) -> dict[str, Any]:
    metadata = manifest.get("metadata")
    found = metadata.get(key) if isinstance(metadata, dict) else None
    return found if isinstance(found, dict) else {}


def _chunks(text: str) -> list[tuple[int, str]]:
    """(first line number, text) of each document, the `---` lines themselves left out."""
    chunks: list[tuple[int, str]] = []
    start, lines = 1, list[str]()
    for number, line in enumerate(text.splitlines(keepends=True), start=1):
        if line.startswith("---") and line[3:4] in ("", " ", "\t", "\r", "\n"):
            chunks.append((start, "".join(lines)))
            # Anything after the marker on the same line belongs to the new document.
            rest = line[3:].lstrip(" \t")
            start, lines = (number, [rest]) if rest.strip() else (number + 1, [])
        elif line.rstrip() == "...":
            continue
        else:
            lines.append(line)
    chunks.append((start, "".join(lines)))
    return chunks


def parse(text: str) -> tuple[list[Document], list[Violation]]:
    """Every object of the stream in order; empty documents (Helm renders many) are dropped."""
    documents: list[Document] = []
    violations: list[Violation] = []
    for line, chunk in _chunks(text):
        try:
            body = yaml.load(chunk, Loader=_Loader)
        except yaml.YAMLError as error:
            mark, context = getattr(error, "problem_mark", None), getattr(error, "context_mark", None)
            where = f"line {line + mark.line}" if mark is not None else f"the document at line {line}"
            reason = str(getattr(error, "problem", None) or error)
            if context is not None:
                reason += f" {getattr(error, 'context', '')} at line {line + context.line}"
            violations.append(
                Violation(
                    "input",
                    where,
                    f"is not valid YAML ({reason})",
                    "fix the template that renders this document (helm template shows the stream)",
                )
            )
            continue
        if body is None:
            continue
        if not isinstance(body, dict) or not isinstance(body.get("kind"), str):
            violations.append(
                Violation(
                    "input",
                    f"the document at line {line}",
                    "is not a Kubernetes object (a mapping with apiVersion, kind and metadata.name)",
                    "render Kubernetes objects only",
                )
            )
            continue
        documents.append(Document(chunk if chunk.endswith("\n") else chunk + "\n", body))
    return documents, violations


def objects_of(manifest: Manifest) -> list[Manifest]:
    """The objects a document stands for: the items of a `kind: List`, else the document itself."""
    items = manifest.get("items")
    if manifest.get("kind", "").endswith("List") and isinstance(items, list):
        return [item for item in items if isinstance(item, dict)]
    return [manifest]


def dump(manifest: Manifest) -> str:
    rendered: str = yaml.dump(manifest, Dumper=_Dumper, sort_keys=False, default_flow_style=False)
    return rendered


def join(texts: list[str]) -> str:
    return "".join(f"---\n{text}" for text in texts)
