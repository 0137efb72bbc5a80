#!/usr/bin/env bash
# Build the shared environment (every package of requirements.lock) at VENV_REAL, safely when several
# `make venv` run at once (two clones, or `make demo` and `make test` side by side on a fresh machine):
#
#     bash .ci/shared_env.sh VENV_REAL PYTHON_BASE
#
# - One build at a time: a flock on VENV_REAL.lock; a `make venv` that has to wait says whose build it waits for.
# - The packages go into a new folder, VENV_REAL.build-<pid>, that never moves afterwards (a virtualenv's
#   pyvenv.cfg and its scripts' shebangs name its own absolute path); when the build is complete, VENV_REAL
#   becomes a link to it by one rename. So VENV_REAL is either absent or complete, never half-built, and a
#   process using it is never pulled from under.
# - Only the lock holder deletes, and only what no one is building: the build folders that a killed or
#   failed build left, and a VENV_REAL without `.complete` (an older Makefile's build in place, killed).
# Run from the clone's root (it reads requirements.lock there).
set -euo pipefail
real=$1 python_base=$2
lock="$real.lock"
mkdir -p "$(dirname "$real")"
exec 9>>"$lock"
if ! flock -n 9; then
  echo "make venv: waiting for the build of $real that holds $lock ($(cat "$lock" 2>/dev/null))" >&2
  flock 9
fi
echo "pid $$ in $PWD since $(date -u +%FT%TZ)" >"$lock"

target=$(readlink "$real" || true)  # the build folder a complete VENV_REAL links to
for stale in "$real".build-* "$real".link-*; do
  if [ -e "$stale" ] && [ "$(basename "$stale")" != "$target" ]; then rm -rf "$stale"; fi
done
if [ -f "$real/.complete" ]; then
  exit 0  # built while this one waited
fi
rm -rf "$real"

build="$real.build-$$"
trap 'rm -rf "$build" "$real.link-$$"' EXIT  # a failed or interrupted build leaves nothing behind
echo "Creating the environment in $real from requirements.lock (about 2 minutes, once per lock)"
"$python_base" -m venv --prompt "$(basename "$real")" "$build"
"$build/bin/pip" install -q --upgrade pip
"$build/bin/pip" install -q --require-hashes --no-deps -r requirements.lock
touch "$build/.complete"
ln -s "$(basename "$build")" "$real.link-$$"
mv -T "$real.link-$$" "$real"  # rename(2): VENV_REAL appears complete, in one step
trap - EXIT
