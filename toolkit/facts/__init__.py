"""Facts: each one a command (an argv builder) plus a pure parser of its output.

Parsers never run anything. They either return what the tool reported or raise
``errors.ParseError`` (``errors.FstabError`` for a guest fstab): garbage,
truncated or locale-dependent output is never read as "nothing there". Where a
tool reports "nothing there" through its exit code (sfdisk on a disk without a
table, blkid on a blank device, findmnt with no match), a ``*_from_result``
function reads the whole ``CommandResult`` and decides.
"""
