#!/usr/bin/env bash
# Prints the path of a Python 3.10 interpreter, or explains how to get one.
for candidate in python3.10 $(ls -d "$(pyenv root 2>/dev/null)"/versions/3.10.*/bin/python3.10 2>/dev/null | sort -V -r); do
  if command -v "$candidate" >/dev/null 2>&1 && \
     "$candidate" -c 'import sys; assert sys.version_info[:2] == (3, 10)' 2>/dev/null; then
    command -v "$candidate"; exit 0
  fi
done
cat >&2 <<'MSG'
error: Python 3.10 not found (TFX 1.16 supports Python 3.9-3.10 only).
Install it with one of:
  pyenv install 3.10.13            # then re-run make; pyenv versions are found automatically
  apt-get install python3.10 python3.10-venv   # where your distribution ships it
or point make at it:  make PYTHON310=/path/to/python3.10 demo
MSG
exit 1
