#!/bin/sh
# Entrypoint of the `dev` image stage (Tilt only; production images start python directly).
#
# `migrate` (the init container's argument) runs once and exits, as in production. Anything else
# serves under watchfiles, which restarts the service whenever Tilt's live_update syncs a changed
# file into site-packages/accrue; on SIGTERM watchfiles sends the service SIGINT, which the
# services treat as a graceful stop.
set -eu
: "${SERVICE_MODULE:?the dev stage of deploy/docker/Dockerfile sets SERVICE_MODULE}"

if [ "${1:-}" = "migrate" ]; then
    exec python -m "$SERVICE_MODULE" "$@"
fi

code_dir="$(python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')/accrue"
exec watchfiles --target-type command --sigint-timeout 15 "python -m $SERVICE_MODULE $*" "$code_dir"
