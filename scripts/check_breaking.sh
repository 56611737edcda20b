#!/usr/bin/env bash
# `make breaking`: buf breaking (WIRE_JSON) of protos/ against the newest release tag (v*).
# Before the first release there is nothing to guard yet, and the check says so.
set -euo pipefail
cd "$(dirname "$0")/.."
tag="$(git tag --list 'v*' --sort=-version:refname | head -n 1)"
if [[ -z "$tag" ]]; then
    echo "breaking: no release tag (v*) yet; nothing to compare against"
    exit 0
fi
echo "breaking: protos/ against $tag"
cd protos
npx --yes @bufbuild/buf@1.75.0 breaking --against "../.git#tag=$tag,subdir=protos"
