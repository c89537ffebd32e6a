#!/usr/bin/env bash
# Installs the command-line tools the benchmark drives the application with, when missing:
# wrk (the HTTP load generator of the live workload; a Python client cannot outrun the server).
# Debian/Ubuntu only; elsewhere install wrk yourself.
set -eu
if ! command -v wrk >/dev/null; then
  if ! command -v apt-get >/dev/null; then
    echo "ensure-tools: wrk is missing and there is no apt-get here; install wrk" >&2
    exit 1
  fi
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  echo "installing wrk"
  $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq wrk >/dev/null \
    || { $sudo apt-get update -qq && $sudo apt-get -o DPkg::Lock::Timeout=300 install -y -qq wrk >/dev/null; }
fi
