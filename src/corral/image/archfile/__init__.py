"""gen-vm-image's architecture files: parsed whole (parse), their local inputs confined and
copied (local_inputs), `extra_kwargs` translated (extra_kwargs), their images made (images)."""
