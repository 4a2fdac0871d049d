"""The README's quickstart as data: its files and its attach command, read from README.md.

Each quickstart file is the fenced block right after an HTML comment that names it,
`<!-- quickstart-file: hostA/evpnd.yaml -->`, so the tests follow the README as
written instead of a copy of it.
"""

from __future__ import annotations

import re

from tests.conftest import REPO

README = REPO / "README.md"
FILE_BLOCK = re.compile(r"<!-- quickstart-file: (\S+) -->\n```[a-z]*\n(.*?)^```$", re.S | re.M)
# Step 4's command: an endpoint's port into the VNI's bridge.
ATTACH = re.compile(r"^ip link set dev (\S+) .*master br100.*$", re.M)
NAMES = ("rr/frr.conf", "hostA/evpnd.yaml", "hostB/evpnd.yaml")


def quickstart_files(text: str | None = None) -> dict[str, str]:
    """name -> content of every marked block; each name once."""
    text = README.read_text() if text is None else text
    files: dict[str, str] = {}
    for name, content in FILE_BLOCK.findall(text):
        assert name not in files, f"README: quickstart file {name} is given twice"
        files[name] = content
    return files


def attach_command(text: str | None = None) -> tuple[str, str]:
    """(the port it names, the whole command line) of the README's attach step."""
    text = README.read_text() if text is None else text
    found = ATTACH.findall(text)
    assert len(found) == 1, f"README: expected one 'ip link set dev ... master br100' line: {found}"
    match = ATTACH.search(text)
    assert match is not None
    return match[1], match[0]
