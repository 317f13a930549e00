"""Written by `envbuild image`: point a lock's file URLs at a mirror, hashes untouched.

The same rule as envbuild.settings.mirrors.rewrite_lock_text: every quoted URL under a canonical prefix
(longest first) gets the mirror's prefix instead. Usage: mirror.py RULES SOURCE TARGET.
"""

import re
import sys

rules_path, source, target = sys.argv[1:4]
with open(rules_path, encoding="utf-8") as handle:
    rules = [tuple(line.rstrip("\n").split("\t", 1)) for line in handle if "\t" in line]
rules.sort(key=lambda rule: -len(rule[0]))


def swap(match: "re.Match[str]") -> str:
    url = match.group(1)
    for old, new in rules:
        if url == old or url.startswith(old + "/"):
            return f'"{new}{url[len(old):]}"'
    return match.group(0)


with open(source, encoding="utf-8") as handle:
    text = handle.read()
with open(target, "w", encoding="utf-8") as handle:
    handle.write(re.sub(r'"((?:https?|file)://[^"]+)"', swap, text))
