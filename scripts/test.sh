#!/usr/bin/env bash
# The test command of the README. Default: everything but tests marked slow. --all: everything.
set -uo pipefail
cd "$(dirname "$0")/.."
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 LANGGRAPH_STRICT_MSGPACK=true
marker=(-m "not slow and not gpu")
[ "${1:-}" = "--all" ] && marker=(-m "not gpu")
.venv/bin/python -m pytest "${marker[@]}" -q
rc=$?
# pytest exits 5 when it collected no test: that is a failure of the suite, say so.
[ $rc -eq 5 ] && echo "no tests were collected" >&2
exit $rc
