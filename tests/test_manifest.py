import json
import math
from pathlib import Path

import pytest

from icreward.errors import ManifestError
from icreward.manifest import (
    Manifest,
    PairRecord,
    PointRecord,
    format_skipped,
    load_manifest,
    write_manifest,
)


@pytest.fixture
def media(tmp_path: Path) -> Path:
    """A data folder with empty-but-present media files beside where manifests are written."""
    for name in ("img.png", "a.mp4", "b.mp4", "c.mp4"):
        (tmp_path / name).write_bytes(b"")
    (tmp_path / "frames").mkdir()  # a folder of frames also counts as a video
    return tmp_path


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def jsonl(path: Path, rows: list[dict]) -> Path:
    return write_lines(path, [json.dumps(r) for r in rows])


def point(i: int | str = 1, **kw) -> dict:
    return {"id": str(i), "image": "img.png", "video": "a.mp4", **kw}


def pair(i: int | str = 1, **kw) -> dict:
    return {"id": str(i), "image": "img.png", "video_a": "a.mp4", "video_b": "b.mp4", **kw}


def raises(path: Path, line: int | None, *words: str, **load_kw) -> ManifestError:
    """Load `path`, expect a ManifestError at `line` whose reason contains every one of `words`."""
    with pytest.raises(ManifestError) as info:
        load_manifest(path, **load_kw)
    err = info.value
    assert err.path == str(path)
    assert err.line == line
    for word in words:
        assert word in err.reason, (word, err.reason)
    return err


# ---- round trips and reading


def test_point_jsonl_round_trip_keeps_unknown_keys(media):
    rows = [
        point(1, score=0.75, prompt="a cat", labels={"ic": 0.8, "motion": 0.1}, mode="blur", severity=2),
        point(2, video="frames", extra_list=[1, 2], note=None),
        point(3, video=str(media / "c.mp4"), score=1),
    ]
    src = media / "in.jsonl"
    write_manifest(src, rows)
    m = load_manifest(src)
    assert isinstance(m, Manifest) and m.kind == "point" and len(m) == 3
    assert [r.to_dict() for r in m] == rows
    first = m[0]
    assert isinstance(first, PointRecord)
    assert first.image == media / "img.png" and first.image.is_absolute()
    assert first.score == 0.75 and first.prompt == "a cat" and first.labels == {"ic": 0.8, "motion": 0.1}
    assert first.extra == {"mode": "blur", "severity": 2} and first.line == 1
    assert m[1].video == media / "frames" and m[1].score is None
    assert m[2].video == media / "c.mp4" and m[2].to_dict()["video"] == str(media / "c.mp4")
    assert m.score_range == (0.75, 1.0)
    assert m.skipped == []

    out = media / "out.jsonl"
    write_manifest(out, m)  # records are written through to_dict
    assert load_manifest(out).records == m.records


def test_pair_jsonl_round_trip(media):
    rows = [
        pair(1, label="A", prompt="p", labels={"ic": "A", "motion": "tie"}, mode_a="none", severity_b=3),
        pair(2, label="tie", score_a=0.5, score_b=0.9),
        pair(3, label="B"),
    ]
    src = media / "pairs.jsonl"
    write_manifest(src, rows)
    m = load_manifest(src)
    assert m.kind == "pair" and len(m) == 3
    assert [r.to_dict() for r in m] == rows
    r = m[0]
    assert isinstance(r, PairRecord)
    assert (r.video_a, r.video_b) == (media / "a.mp4", media / "b.mp4")
    assert r.extra == {"mode_a": "none", "severity_b": 3}
    assert m[1].label == "tie"  # a given label wins over the scores, which are kept
    assert (m[1].score_a, m[1].score_b) == (0.5, 0.9)
    assert m.score_range == (0.5, 0.9)


def test_paths_relative_to_manifest_folder_not_cwd(media, monkeypatch):
    sub = media / "data"
    sub.mkdir()
    (sub / "img.png").write_bytes(b"")
    (sub / "v.mp4").write_bytes(b"")
    jsonl(sub / "m.jsonl", [point(1, video="v.mp4"), point(2, image="../img.png", video=str(media / "a.mp4"))])
    monkeypatch.chdir(media)
    m = load_manifest(Path("data/m.jsonl"))  # a relative manifest path still gives absolute media paths
    assert m[0].image == sub / "img.png" and m[0].video == sub / "v.mp4"
    assert m[1].image.resolve() == media / "img.png" and m[1].video == media / "a.mp4"
    assert m[1].to_dict()["image"] == "../img.png"


def test_label_case_and_int_ids(media):
    path = jsonl(
        media / "m.jsonl", [pair(1, label="a"), pair(2, label="b"), pair(3, label="TIE"), pair(4, label="Tie")]
    )
    assert [r.label for r in load_manifest(path)] == ["A", "B", "tie", "tie"]
    path = write_lines(media / "ids.jsonl", [json.dumps({**point(), "id": 7})])
    assert load_manifest(path)[0].id == "7"


def test_labels_derived_from_scores_with_tie_margin(media):
    rows = [
        pair(1, score_a=0.9, score_b=0.2),
        pair(2, score_a=0.2, score_b=0.9),
        pair(3, score_a=0.8, score_b=0.7),  # gap exactly the margin (0.1000...09 in floats): a tie
        pair(4, score_a=0.5, score_b=0.5),
        pair(5, score_a=4, score_b=2),
    ]
    path = jsonl(media / "m.jsonl", rows)
    m = load_manifest(path, tie_margin=0.1)
    assert [r.label for r in m] == ["A", "B", "tie", "tie", "A"]
    assert m.tie_margin == 0.1 and m.score_range == (0.2, 4.0)
    assert all(r.label_from == "scores" for r in m)
    assert "label" not in m[0].to_dict()  # derived labels are not written back as if given
    assert [r.label for r in load_manifest(path)] == ["A", "B", "A", "tie", "A"]
    with pytest.raises(ValueError, match="tie_margin"):
        load_manifest(path, tie_margin=-1)


def test_per_dimension_labels(media):
    rows = [
        pair(1, labels={"ic": "b", "motion": "TIE"}),  # no label: labels["ic"] is the label
        pair(2, label="A", labels={"ic": "B"}),  # the given label wins
        pair(3, labels={"motion": "A"}, score_a=1, score_b=0),
    ]
    m = load_manifest(jsonl(media / "pairs.jsonl", rows))
    assert [r.label for r in m] == ["B", "A", "A"]
    assert [r.label_from for r in m] == ["labels", "label", "scores"]
    assert m[0].labels == {"ic": "B", "motion": "tie"}
    assert m[0].to_dict() == pair(1, labels={"ic": "B", "motion": "tie"})
    points = load_manifest(jsonl(media / "points.jsonl", [point(1, labels={"ic": 0.8, "motion": "0.25"})]))
    assert points[0].labels == {"ic": 0.8, "motion": 0.25}


def test_point_csv(media):
    path = write_lines(
        media / "m.csv",
        [
            "id,image,video,score,prompt,labels,mode",
            '1,img.png,a.mp4,0.5,"a cat, sitting","{""ic"": 0.7}",blur',
            "",
            f"2,img.png,{media / 'b.mp4'}, 3 ,,,",
            '3,img.png,frames,,"line one',
            'line two",,',
        ],
    )
    m = load_manifest(path)
    assert m.kind == "point" and len(m) == 3
    a, b, c = m
    assert (a.id, a.score, a.prompt, a.labels, a.extra, a.line) == (
        "1",
        0.5,
        "a cat, sitting",
        {"ic": 0.7},
        {"mode": "blur"},
        2,
    )
    assert b.line == 4 and b.score == 3.0 and b.prompt is None and b.labels == {} and b.extra == {}
    assert b.video == media / "b.mp4"
    assert c.line == 5 and c.score is None and c.prompt == "line one\nline two"
    assert m.score_range == (0.5, 3.0)


def test_pair_csv_and_labels_column(media):
    path = write_lines(
        media / "m.csv",
        [
            "\ufeffid,image,video_a,video_b,label,score_a,score_b,labels",
            "p1,img.png,a.mp4,b.mp4,a,,,",
            "p2,img.png,a.mp4,b.mp4,,0.25,0.75,",
            'p3,img.png,a.mp4,b.mp4,,,,"{""ic"": ""tie"", ""motion"": ""A""}"',
        ],
    )
    m = load_manifest(path)
    assert m.kind == "pair"
    assert [r.label for r in m] == ["A", "B", "tie"]
    assert (m[1].score_a, m[1].score_b) == (0.25, 0.75)
    assert m[2].labels == {"ic": "tie", "motion": "A"}
    assert [r.line for r in m] == [2, 3, 4]


def test_jsonl_with_bom_and_crlf_line_ends(media):
    path = media / "m.json"
    path.write_bytes(("\ufeff" + json.dumps(point(1)) + "\r\n\r\n" + json.dumps(point(2)) + "\r\n").encode())
    assert [(r.id, r.line) for r in load_manifest(path)] == [("1", 1), ("2", 3)]


def test_check_files_off_allows_missing_media(media):
    path = jsonl(media / "m.jsonl", [point(1, video="nope.mp4")])
    assert load_manifest(path, check_files=False)[0].video == media / "nope.mp4"


# ---- errors: path, line number and wording


def test_manifest_file_problems(tmp_path):
    raises(tmp_path / "none.jsonl", None, "not found")
    (tmp_path / "m.txt").write_text("{}\n")
    raises(tmp_path / "m.txt", None, "not a manifest", ".jsonl", ".csv")
    (tmp_path / "dir.jsonl").mkdir()
    raises(tmp_path / "dir.jsonl", None, "folder")


@pytest.mark.parametrize("text", ["", "\n\n  \n"])
def test_empty_manifest(tmp_path, text):
    path = tmp_path / "m.jsonl"
    path.write_text(text)
    raises(path, None, "empty manifest")
    raises(path, None, "empty manifest", skip_bad=True)
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("id,image,video\n" + text)
    raises(csv_path, None, "empty manifest")


def test_malformed_json_line(media):
    path = write_lines(media / "m.jsonl", [json.dumps(point(1)), "", '{"id": "2", "image": "img.png",'])
    err = raises(path, 3, "malformed JSON", "Expecting")
    assert str(err).startswith(f"{path}:3: ")


def test_line_not_an_object(media):
    path = write_lines(media / "m.jsonl", [json.dumps(point(1)), "[1, 2]"])
    raises(path, 2, "expected a JSON object", "array")


def test_missing_media_file_names_resolved_path(media):
    path = jsonl(media / "m.jsonl", [point(1), point(2, video="gone.mp4")])
    err = raises(path, 2, "missing file", '"video"', str(media / "gone.mp4"))
    assert err.record_id == "2"


@pytest.mark.parametrize(
    ("row", "words"),
    [
        (point(score=float("nan")), ["score", "finite number", "NaN"]),
        (point(score="nan"), ["score", "finite number", '"nan"']),
        (point(score=float("inf")), ["score", "finite number", "Infinity"]),
        (point(score="high"), ["score", "finite number"]),
        (point(score=True), ["score", "finite number"]),
        (pair(score_a=float("nan"), score_b=1), ["score_a", "finite number"]),
        (pair(score_a=1, score_b="NaN"), ["score_b", "finite number"]),
        (pair(score_a=1), ['"score_a" is given without "score_b"']),
        (pair(label="C"), ['label must be "A", "B" or "tie"', '"C"']),
        (pair(label=1), ['label must be "A", "B" or "tie"']),
        (pair(labels={"ic": "maybe"}), ['labels["ic"]', '"maybe"']),
        (pair(labels="A"), ["labels must be an object"]),
        (point(labels={"ic": "nan"}), ['labels["ic"]', "finite number"]),
        (point(labels={"ic": None}), ['labels["ic"] is null']),
        (point(prompt=3), ["prompt must be a string"]),
        (point(image=""), ['"image" must be a non-empty path string']),
        (point(video=["a.mp4"]), ['"video" must be a non-empty path string']),
        (point(id=""), ["id is empty"]),
        (point(id=1.5), ["id must be a string or an integer"]),
        (point(id=True), ["id must be a string or an integer"]),
        ({**point(), **pair()}, ['both "video" and "video_a"']),
        ({"id": "1", "image": "img.png"}, ['missing required key "video"', '"video_a"']),
    ],
)
def test_invalid_values(media, row, words):
    path = write_lines(media / "m.jsonl", ["", json.dumps(row)])  # a blank first line still counts
    raises(path, 2, *words)


@pytest.mark.parametrize(
    ("row", "words"),
    [
        ({"image": "img.png", "video": "a.mp4"}, ['missing required key "id"']),
        ({"id": "1", "video": "a.mp4"}, ['missing required key "image"']),
        ({"id": "1", "video_a": "a.mp4"}, ['missing required keys "image", "video_b"']),
        ({"id": "1", "image": None, "video": "a.mp4"}, ['missing required key "image"']),
    ],
)
def test_missing_required_keys(media, row, words):
    raises(jsonl(media / "m.jsonl", [row]), 1, *words)


def test_duplicate_id_names_first_line(media):
    path = write_lines(media / "m.jsonl", [json.dumps(point("x")), json.dumps(point("y")), "", json.dumps(point("x"))])
    err = raises(path, 4, 'duplicate id "x"', "first seen on line 1")
    assert err.record_id == "x"
    # an int id and the same id as a string are the same id
    raises(jsonl(media / "n.jsonl", [{**point(), "id": 5}, point("5")]), 2, 'duplicate id "5"')


def test_mixed_kinds(media):
    raises(jsonl(media / "m.jsonl", [point(1), pair(2)]), 2, "pair record in a pointwise manifest", "line 1")
    raises(jsonl(media / "n.jsonl", [pair(1), point(2)]), 2, "pointwise record in a pair manifest")


def test_csv_errors(media):
    header = "id,image,video,score,labels"
    raises(write_lines(media / "a.csv", [header, "1,img.png,a.mp4,nan,"]), 2, "score", "finite number")
    raises(write_lines(media / "b.csv", [header, "1,img.png,a.mp4,,{bad"]), 2, "labels is not valid JSON")
    raises(write_lines(media / "c.csv", [header, "1,img.png,a.mp4,1,,extra"]), 2, "6 cells", "5 columns")
    raises(write_lines(media / "d.csv", [header, "1,img.png,,0.5,"]), 2, 'missing required key "video"')
    raises(write_lines(media / "e.csv", [",id,image,video", "0,1,img.png,a.mp4"]), 1, "empty column name", "index")
    raises(write_lines(media / "f.csv", ["id,image,video,id", "1,img.png,a.mp4,2"]), 1, 'column "id" twice')
    raises(write_lines(media / "g.csv", ["id,image,video", "1,img.png,a.mp4", '2,img.png,"a.mp4']), 3, "malformed CSV")


def test_require_labels(media):
    points = jsonl(media / "p.jsonl", [point(1, score=1), point(2)])
    assert len(load_manifest(points)) == 2
    raises(points, 2, 'no "score"', require_labels=True)
    pairs = jsonl(
        media / "q.jsonl", [pair(1, label="A"), pair(2, score_a=1, score_b=2), pair(3, labels={"ic": "B"}), pair(4)]
    )
    assert load_manifest(pairs)[3].label is None
    raises(pairs, 4, "no label", require_labels=True)


# ---- skip_bad


def test_skip_bad_collects_and_continues(media):
    path = write_lines(
        media / "m.jsonl",
        [
            json.dumps(point("ok1", score=2)),
            "{not json",
            json.dumps(point("nan", score="nan")),
            json.dumps(point("ok1")),
            json.dumps(point("gone", video="gone.mp4")),
            json.dumps(point("ok2", score=5)),
            json.dumps(pair("p")),
        ],
    )
    raises(path, 2, "malformed JSON")
    m = load_manifest(path, skip_bad=True)
    assert [r.id for r in m] == ["ok1", "ok2"]
    assert [(e.line, e.record_id) for e in m.skipped] == [(2, None), (3, "nan"), (4, "ok1"), (5, "gone"), (7, "p")]
    assert m.score_range == (2.0, 5.0)
    text = format_skipped(m)
    lines = text.splitlines()
    assert lines[0] == f"skipped 5 lines of {path}:"
    assert lines[1].startswith("  line 2: malformed JSON")
    assert lines[2].startswith("  line 3 (id nan): score must be a finite number")
    assert lines[3] == '  line 4 (id ok1): duplicate id "ok1" (first seen on line 1)'
    assert lines[4] == f'  line 5 (id gone): missing file for "video": {media / "gone.mp4"}'
    assert lines[5].startswith("  line 7 (id p): pair record in a pointwise manifest")


def test_skip_bad_kind_comes_from_first_valid_record(media):
    path = jsonl(media / "m.jsonl", [pair(1, label="X"), point(2), point(3)])
    m = load_manifest(path, skip_bad=True)
    assert m.kind == "point" and [r.id for r in m] == ["2", "3"]
    assert format_skipped(m) == f'skipped 1 line of {path}:\n  line 1 (id 1): label must be "A", "B" or "tie", got "X"'


def test_skip_bad_with_every_line_bad_still_raises(media):
    path = write_lines(media / "m.jsonl", ["{", json.dumps(point(1, score=math.inf))])
    raises(path, None, "no valid records", "2 non-blank lines", "line 1", skip_bad=True)


def test_format_skipped_empty_when_nothing_skipped(media):
    assert format_skipped(load_manifest(jsonl(media / "m.jsonl", [point()]), skip_bad=True)) == ""


# ---- writing


def test_write_manifest_is_strict_and_atomic(media):
    path = media / "out.jsonl"
    write_manifest(path, [point(1, score=0.5)])
    before = path.read_text()
    with pytest.raises(ValueError):
        write_manifest(path, [point(2), point(3, score=float("nan"))])
    assert path.read_text() == before  # a failed write leaves the old file whole
    assert sorted(p.name for p in media.iterdir() if p.name.startswith(".")) == []
    with pytest.raises(TypeError, match="must be a dict"):
        write_manifest(path, [["not", "a", "dict"]])
    with pytest.raises(ValueError, match=".jsonl"):
        write_manifest(media / "out.csv", [point()])
    write_manifest(path, [{**point(), "image": media / "img.png", "prompt": "é"}])
    assert json.loads(path.read_text())["image"] == str(media / "img.png")
    assert "é" in path.read_text(encoding="utf-8")
