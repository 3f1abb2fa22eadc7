"""An email address is refused with any control character, C1 ones included (U+0085 is whitespace
to Python but not to ECMAScript, so a client checking the documented pattern would accept it)."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from api.models import Email

EMAIL = TypeAdapter(Email)


def test_plain_addresses_pass_and_are_lowercased() -> None:
    assert EMAIL.validate_python("Ada@Example.ORG") == "ada@example.org"


@pytest.mark.parametrize("address", ["a\x85b@example.org", "\x98`Q@M.BZ", "a@exa\x9fmple.org", "a b@example.org"])
def test_control_characters_and_spaces_are_refused(address: str) -> None:
    with pytest.raises(ValidationError):
        EMAIL.validate_python(address)
