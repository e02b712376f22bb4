"""The create-VM form: its fields turned into the API's own body (corral.api.schemas.VmCreate),
and the API's validation errors turned back into messages at the form's fields. Pure."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from corral.api.schemas import VmCreate
from corral.errors import InvalidInput
from corral.units import parse_instance_type, parse_size

MIB = 1 << 20
FIELDS = (
    "name", "instance_type", "cpus", "memory", "image", "disk_size", "ssh_keys", "user_data",
    "networks", "tags", "start",
)  # fmt: skip
# The body's field -> the form's field that sets it.
BODY_TO_FORM = {
    "name": "name",
    "boot_vcpus": "cpus",
    "max_vcpus": "cpus",
    "memory_size": "memory",
    "image": "image",
    "disk_size": "disk_size",
    "ssh_keys": "ssh_keys",
    "user_data": "user_data",
    "networks": "networks",
    "tags": "tags",
}


def _words(text: str) -> list[str]:
    return [w for w in text.replace(",", " ").split() if w]


def vm_create(values: dict[str, str]) -> tuple[VmCreate | None, dict[str, str]]:
    """(the validated body, {}) or (None, {form field: error})."""
    errors: dict[str, str] = {}
    body: dict[str, Any] = {"name": values.get("name", "").strip()}
    instance_type = values.get("instance_type", "").strip()
    if instance_type:
        try:
            kind = parse_instance_type(instance_type)
            body["boot_vcpus"], body["memory_size"] = kind.cpus, kind.memory_mib * MIB
        except InvalidInput as exc:
            errors["instance_type"] = exc.message
    else:
        cpus = values.get("cpus", "").strip() or "1"
        if cpus.isdigit():
            body["boot_vcpus"] = int(cpus)
        else:
            errors["cpus"] = f"{cpus!r} is not a whole number"
        memory = values.get("memory", "").strip()
        if not memory:
            errors["memory"] = "give the memory (e.g. 256M, 1G) or an instance type"
        else:
            try:
                body["memory_size"] = parse_size(memory, default_unit="M", what="memory size")
            except InvalidInput as exc:
                errors["memory"] = exc.message
    if image := values.get("image", "").strip():
        body["image"] = image
    if disk := values.get("disk_size", "").strip():
        try:
            body["disk_size"] = parse_size(disk, default_unit="G", what="disk size")
        except InvalidInput as exc:
            errors["disk_size"] = exc.message
    body["ssh_keys"] = [k.strip() for k in values.get("ssh_keys", "").splitlines() if k.strip()]
    if user_data := values.get("user_data", ""):
        body["user_data"] = user_data.replace("\r\n", "\n")
    body["networks"] = [
        {"id": f"net{i}", "network": name}
        for i, name in enumerate(_words(values.get("networks", "")))
    ]
    body["tags"] = _words(values.get("tags", ""))
    body["start"] = values.get("start") in ("on", "true", "1")
    try:
        created = VmCreate.model_validate(body)
    except ValidationError as exc:
        for error in exc.errors():
            where = error["loc"][0] if error["loc"] else ""
            field = BODY_TO_FORM.get(str(where), "form")
            errors.setdefault(field, _message(error))
        return None, errors
    return (None, errors) if errors else (created, {})


def _message(error: Any) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    rest = [str(p) for p in error["loc"][1:]]
    return f"{' '.join(rest)}: {message}" if rest else message
