"""Location templates such as ``"docs/{object_id}.json"``: plain ``{name}`` fields only.

Only simple names are allowed (no ``{x.attr}`` / ``{x[0]}`` / format specs), so a template from a task
document cannot reach into Python objects. Fields are ``object_id`` and the keys of the item's meta.
"""

from __future__ import annotations

import string
from typing import Any, Mapping

from loaders.errors import ItemProblem


def template_fields(template: str) -> list[str]:
    """The field names of ``template``; raises ``ValueError`` for anything but plain ``{name}`` fields."""
    names = []
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if not field.isidentifier() or spec or conversion:
            raise ValueError(f"template field {{{field}}} must be a plain name like {{object_id}}")
        names.append(field)
    return names


def render(template: str, object_id: str, location: Mapping[str, Any]) -> str:
    """Fill ``template`` with ``object_id`` and the meta's fields; a missing field is an item problem."""
    values = {**{k: v for k, v in location.items() if isinstance(k, str)}, "object_id": object_id}
    missing = [name for name in template_fields(template) if name not in values]
    if missing:
        raise ItemProblem(f"meta lacks {', '.join(missing)} needed by template {template!r}")
    return template.format_map({name: values[name] for name in template_fields(template)})
