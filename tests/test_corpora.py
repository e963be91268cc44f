"""Pre-training corpora: the embedded corpus built from real Debian packages, local files, and the hub reader."""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from plmbench.data import corpora
from plmbench.data.corpora import BUILDERS, Corpus, CorpusConfigError, build_corpus, content_fingerprint
from plmbench.data.corpora.sentences import text_to_sentences
from plmbench.data.debian import MissingSourceError, ensure_package

CONF = Path(__file__).resolve().parents[1] / "conf"
AUSTEN_CHAPTERS = {"sensesensibility": 50, "prideprejudice": 61, "mansfieldpark": 48, "emma": 55,
                   "northangerabbey": 31, "persuasion": 24}


@pytest.fixture(scope="session")
def embedded(tmp_path_factory):
    """A data root holding the embedded corpus, built once from the real Debian packages."""
    if not (shutil.which("apt-get") and shutil.which("dpkg-deb")):
        pytest.skip("apt-get/dpkg-deb not available: cannot fetch the Debian packages of the embedded corpus")
    from plmbench.data.corpora.embedded import build_embedded

    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("PLMBENCH_DATA", str(tmp_path_factory.mktemp("data")))
        try:
            manifest = build_embedded()
        except MissingSourceError as error:
            pytest.skip(f"Debian mirror unreachable: {error}")
        yield manifest


@pytest.fixture(scope="session")
def records(embedded):
    from plmbench import paths

    with (paths.data_root() / "embedded" / "corpus.jsonl").open(encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def _by_source(records, source):
    return [record for record in records if record["source"] == source]


# --- embedded: Austen, KJV, WordNet ---------------------------------------------------------------------------


def test_austen_reads_all_lines_of_the_six_novels_without_r(embedded):
    from plmbench.data.corpora.austen import PACKAGE, load_novels

    novels = load_novels(ensure_package(PACKAGE))
    assert list(novels) == list(AUSTEN_CHAPTERS)
    assert sum(map(len, novels.values())) == 73_422  # rows of janeaustenr::austen_books()
    assert novels["emma"][0] == "EMMA"


def test_austen_one_document_per_chapter(records):
    austen = _by_source(records, "austen")
    counts = {novel: sum(record["id"].split("/")[1] == novel for record in austen) for novel in AUSTEN_CHAPTERS}
    assert counts == AUSTEN_CHAPTERS
    pride = next(record for record in austen if record["id"] == "austen/prideprejudice/001")
    assert pride["sentences"][0] == ("It is a truth universally acknowledged, that a single man in possession of "
                                     "a good fortune, must be in want of a wife.")
    sentences = [sentence for record in austen for sentence in record["sentences"]]
    assert not [s for s in sentences if re.fullmatch(r"(chapter|volume) \w+\.?|the end|finis", s, re.IGNORECASE)]
    assert not [s for s in sentences if "By Jane Austen" in s or "_" in s]  # title pages and italics marks gone


def test_bible_one_document_per_chapter(records):
    kjv = _by_source(records, "kjv")
    assert len(kjv) == 1189 and len({record["id"].split("/")[1] for record in kjv}) == 66
    assert kjv[0]["id"] == "kjv/Ge/001"
    assert kjv[0]["sentences"][0] == "In the beginning God created the heaven and the earth."
    assert kjv[-1]["sentences"][-2:] == ["The grace of our Lord Jesus Christ be with you all.", "Amen."]


def test_bible_reader_prints_every_verse(embedded):
    from plmbench.data.corpora.bible import kjv_verses

    verses = list(kjv_verses())
    assert len(verses) == 31_102  # the verse count of the KJV
    assert verses[0] == ("Ge", 1, 1, "In the beginning God created the heaven and the earth.")


def test_wordnet_documents_group_synsets_of_one_pos(records):
    wordnet = _by_source(records, "wordnet")
    assert {record["id"].split("/")[1] for record in wordnet} == {"n", "v", "a", "r"}
    sentences = [sentence for record in wordnet for sentence in record["sentences"]]
    assert any(s.startswith("dog, domestic dog, Canis familiaris: a member of the genus Canis") for s in sentences)
    assert all(len(record["sentences"]) >= 5 for record in wordnet[:-1])


def test_manifest_counts_match_the_file(embedded, records):
    from plmbench import paths

    for source, entry in embedded["sources"].items():
        mine = _by_source(records, source)
        assert entry["documents"] == len(mine)
        assert entry["sentences"] == sum(len(record["sentences"]) for record in mine)
        assert entry["words"] == sum(len(s.split()) for record in mine for s in record["sentences"])
        assert entry["packages"] and all(package["version"] for package in entry["packages"])
    assert embedded["total"]["documents"] == len(records)
    assert all(sentence.strip() for record in records for sentence in record["sentences"])
    out = paths.data_root() / "embedded"
    markdown = (out / "MANIFEST.md").read_text(encoding="utf-8")
    for entry in embedded["sources"].values():
        assert all(f"{package['package']} {package['version']}" in markdown for package in entry["packages"])
        assert f"{entry['documents']:,}" in markdown
    assert (out / "licenses" / "wordnet-base.copyright").is_file()


def test_embedded_corpus_is_cached_and_fingerprint_stable(embedded):
    from plmbench import paths
    from plmbench.data.corpora.embedded import EmbeddedCorpus, build_embedded

    jsonl = paths.data_root() / "embedded" / "corpus.jsonl"
    before = jsonl.stat().st_mtime_ns
    assert build_embedded() == embedded and jsonl.stat().st_mtime_ns == before  # not rebuilt
    corpus = build_corpus({"kind": "embedded"})
    assert isinstance(corpus, Corpus)
    assert corpus.fingerprint == EmbeddedCorpus().fingerprint
    bible_only = EmbeddedCorpus(sources=["kjv"])
    assert bible_only.fingerprint != corpus.fingerprint
    assert sum(1 for _ in bible_only.documents()) == 1189
    with pytest.raises(CorpusConfigError, match="subset of austen, kjv, wordnet"):
        EmbeddedCorpus(sources=["shakespeare"])


# --- registry, splitter, fingerprint --------------------------------------------------------------------------


def test_registry_rejects_unknown_kind_and_option():
    with pytest.raises(CorpusConfigError, match="not one of embedded, files, hub"):
        build_corpus({"kind": "web"})
    with pytest.raises(CorpusConfigError, match="corpus.path is not an option"):
        build_corpus({"kind": "files", "path": "x.txt"})


def test_splitter_splits_and_enters_fingerprint(monkeypatch):
    assert text_to_sentences("Mr. Bennet came home. He sat down.\n") == ["Mr. Bennet came home.", "He sat down."]
    assert text_to_sentences("  \n ") == []
    before = content_fingerprint(["text"])
    assert content_fingerprint(["text"]) == before
    monkeypatch.setattr(corpora, "SPLITTER_VERSION", "another-splitter")
    assert content_fingerprint(["text"]) != before


# --- files ----------------------------------------------------------------------------------------------------


def test_files_splits_wikitext_articles_at_headings(shared_data):
    path = shared_data / "corpus" / "wikitext-2" / "raw" / "valid.txt"
    titles = [line for line in path.read_text(encoding="utf-8").splitlines()
              if line.startswith(" = ") and not line.startswith(" = = ")]
    documents = list(build_corpus({"kind": "files", "paths": str(path)}).documents())
    assert len(documents) == len(titles) == 60
    assert documents[0][0].startswith("Homarus gammarus , known as the European lobster")
    assert not [s for document in documents for s in document if s.startswith("=")]  # headings dropped


def test_files_reads_wikiextractor_pages(shared_data):
    pattern = str(shared_data / "corpus" / "wikipedia_wikiextractor_sample" / "wiki_*")
    documents = list(build_corpus({"kind": "files", "paths": pattern}).documents())
    assert len(documents) == 2
    assert documents[0][0].startswith("Anarchism is a political philosophy")  # the title line is dropped


def test_files_doc_separators(tmp_path):
    (tmp_path / "a.txt").write_text("One sentence here.\nAnother one.\n\nSecond doc.\n", encoding="utf-8")
    (tmp_path / "b.txt").write_text("Wrapped line\ncontinues here. End.\n", encoding="utf-8")
    pattern = str(tmp_path / "*.txt")
    per_file = list(build_corpus({"kind": "files", "paths": pattern}).documents())
    assert per_file == [["One sentence here.", "Another one.", "Second doc."], ["Wrapped line continues here.", "End."]]
    per_block = list(build_corpus({"kind": "files", "paths": pattern, "doc_separator": "blank_line"}).documents())
    assert per_block == [["One sentence here.", "Another one."], ["Second doc."],
                         ["Wrapped line", "continues here.", "End."]]


def test_files_counts_undecodable_bytes(tmp_path, caplog):
    (tmp_path / "bad.txt").write_bytes(b"Good text here.\n\nBad \xff\xfe bytes here.\n")
    corpus = build_corpus({"kind": "files", "paths": str(tmp_path / "bad.txt")})
    with caplog.at_level(logging.WARNING):
        documents = list(corpus.documents())
    assert corpus.undecodable_bytes == 2
    assert documents == [["Good text here.", "Bad \ufffd\ufffd bytes here."]]
    assert "bad.txt: 2 byte(s) are not UTF-8 (first on line 3)" in caplog.text


def test_files_errors_are_one_line(tmp_path):
    with pytest.raises(CorpusConfigError, match=r"'.*nowhere/\*\.txt' matches no file"):
        build_corpus({"kind": "files", "paths": str(tmp_path / "nowhere" / "*.txt")})
    with pytest.raises(CorpusConfigError, match="corpus.paths is required"):
        build_corpus({"kind": "files", "paths": None})
    (tmp_path / "blank.txt").write_text("\n   \n\n", encoding="utf-8")
    corpus = build_corpus({"kind": "files", "paths": str(tmp_path / "blank.txt")})
    with pytest.raises(CorpusConfigError, match=r"no text in 1 file\(s\)") as error:
        list(corpus.documents())
    assert "\n" not in str(error.value)


def test_files_fingerprint_follows_content_not_names(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("Some text.\n", encoding="utf-8")
    first = build_corpus({"kind": "files", "paths": str(path)}).fingerprint
    assert build_corpus({"kind": "files", "paths": str(path)}).fingerprint == first
    path.rename(tmp_path / "renamed.txt")
    assert build_corpus({"kind": "files", "paths": str(tmp_path / "renamed.txt")}).fingerprint == first
    (tmp_path / "renamed.txt").write_text("Some other text.\n", encoding="utf-8")
    assert build_corpus({"kind": "files", "paths": str(tmp_path / "renamed.txt")}).fingerprint != first


# --- hub (on local files in the hub schema) --------------------------------------------------------------------


def test_hub_wikitext_layout_on_local_text_rows(shared_data):
    path = str(shared_data / "corpus" / "wikitext-2" / "raw" / "valid.txt")
    cfg = {"kind": "hub", "streaming": True,  # streaming: nothing written to the datasets cache
           "sources": {"wikitext": {"path": "text", "data_files": path, "split": "validation", "layout": "wikitext"}}}
    hub = build_corpus(cfg)
    assert list(hub.documents()) == list(build_corpus({"kind": "files", "paths": path}).documents())


def test_hub_document_layout_on_local_parquet(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    def write(texts):
        table = pa.table({"id": [str(i) for i in range(len(texts))], "title": ["t"] * len(texts), "text": texts})
        pq.write_table(table, tmp_path / "wiki.parquet")

    write(["First article. It has two sentences.\n\nSecond paragraph.", "Second article.", ""])
    source = {"path": "parquet", "data_files": str(tmp_path / "*.parquet"), "layout": "document"}
    cfg = {"kind": "hub", "cache_dir": str(tmp_path / "cache"), "sources": {"wikipedia": source}}
    corpus = build_corpus(cfg)
    assert list(corpus.documents()) == [["First article.", "It has two sentences.", "Second paragraph."],
                                        ["Second article."]]
    grouped = build_corpus({**cfg, "sources": {"books": {**source, "rows_per_document": 2}}})
    assert list(grouped.documents()) == [["First article.", "It has two sentences.", "Second paragraph.",
                                          "Second article."]]
    fingerprint = corpus.fingerprint
    assert build_corpus(cfg).fingerprint == fingerprint
    write(["Changed article."])
    assert build_corpus(cfg).fingerprint != fingerprint


def test_hub_offline_fails_at_once_naming_alternatives(monkeypatch):
    from plmbench.data.corpora.hub import HubUnavailableError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(HubUnavailableError, match="corpus=embedded.*corpus=files") as error:
        build_corpus({"kind": "hub", "sources": {"wikitext": {"path": "wikitext", "name": "wikitext-103-raw-v1"}}})
    assert time.monotonic() - start < 10 and "\n" not in str(error.value)


# --- configs and Debian sources -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(path.stem for path in (CONF / "corpus").glob("*.yaml")))
def test_corpus_configs_compose_and_validate(name):
    from hydra import compose, initialize_config_dir

    from plmbench.data.corpora.hub import parse_sources

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(config_name=None, overrides=[f"+corpus={name}"]).corpus
    assert cfg.kind in BUILDERS
    if cfg.kind == "hub":
        assert parse_sources(cfg)  # every option known, every layout valid, without touching the network
    elif cfg.kind == "files":
        with pytest.raises(CorpusConfigError, match="corpus.paths is required"):
            build_corpus(cfg)


def test_ensure_package_unpacks_a_local_deb_once(tmp_path, monkeypatch):
    if not shutil.which("dpkg-deb"):
        pytest.skip("dpkg-deb not available")
    tree = tmp_path / "pkg"
    (tree / "DEBIAN").mkdir(parents=True)
    (tree / "DEBIAN" / "control").write_text("Package: plmbench-probe\nVersion: 1.2-3\nArchitecture: all\n"
                                             "Maintainer: t <t@example.org>\nDescription: test\n", encoding="utf-8")
    (tree / "usr" / "share").mkdir(parents=True)
    (tree / "usr" / "share" / "hello.txt").write_text("hello\n", encoding="utf-8")
    debs = tmp_path / "debs"
    debs.mkdir()
    subprocess.run(["dpkg-deb", "--build", str(tree), str(debs / "plmbench-probe_1.2-3_all.deb")],
                   check=True, capture_output=True)
    monkeypatch.setenv("PLMBENCH_DEB_DIR", str(debs))
    monkeypatch.setenv("PLMBENCH_DATA", str(tmp_path / "data"))
    from plmbench.data.debian import package_record

    root = ensure_package("plmbench-probe")
    assert (root / "usr" / "share" / "hello.txt").read_text() == "hello\n"
    assert package_record("plmbench-probe")["version"] == "1.2-3"
    (debs / "plmbench-probe_1.2-3_all.deb").unlink()
    assert ensure_package("plmbench-probe") == root  # unpacked once, not fetched again


def test_missing_package_error_names_alternatives(tmp_path, monkeypatch):
    if not shutil.which("apt-get"):
        pytest.skip("apt-get not available")
    monkeypatch.setenv("PLMBENCH_DATA", str(tmp_path))
    with pytest.raises(MissingSourceError, match="corpus=files.*corpus=hub") as error:
        ensure_package("plmbench-no-such-package")
    assert "\n" not in str(error.value)
