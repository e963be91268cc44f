"""`plmbench data`: build the embedded offline corpus (Austen, KJV, WordNet from Debian packages) and the WordNet
proxy tasks, so that `make sweep` runs with no network beyond Debian's archive. Safe to rerun: built data is kept."""

from __future__ import annotations

import json


def main(overrides: list[str]) -> None:
    from plmbench.data.corpora.embedded import build_embedded
    from plmbench.data.wordnet import default_root

    force = "force=true" in overrides
    manifest = build_embedded(force=force)
    default_root()  # unpacks wordnet-base for the proxy tasks, if the corpus build has not already
    print(json.dumps({k: manifest[k] for k in manifest if k in ("totals", "sources", "documents", "sentences", "words")},
                     indent=2, default=str))
