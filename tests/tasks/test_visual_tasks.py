"""Visual verifiable tasks (bar charts, shape counting, easy-VQA), the image store, snapshots."""

from __future__ import annotations

import io
import json
import re
import shutil
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from rlsd.context.manifest import ImagesInfo
from rlsd.context.snapshot import SnapshotError, load_snapshot, write_snapshot
from rlsd.tasks import (
    TASK_CONFIGS,
    TASK_GENERATORS,
    BarChartTaskConfig,
    EasyVQATaskConfig,
    ImageStore,
    ShapeCountTaskConfig,
    Task,
    contact_sheet,
    generate_bar_chart_tasks,
    generate_easy_vqa_tasks,
    generate_shape_count_tasks,
    generate_tasks,
    resolve_image,
)
from rlsd.tasks.images import (
    ImageIntegrityError,
    ImageNotFoundError,
    default_image_root,
    pixel_digest,
)
from rlsd.verify import get_verifier

BAR = {"seed": 3, "n_train": 10, "n_heldout": 5, "image_size": 160}
SHAPES = {"seed": 5, "n_train": 10, "n_heldout": 5, "image_size": 128}
EVQA = {"seed": 1, "n_train": 12, "n_heldout": 6}
CONFIGS = {"bar_chart": BAR, "shape_count": SHAPES, "easy_vqa": EVQA}
SIZES = {"bar_chart": (160, 160), "shape_count": (128, 128), "easy_vqa": (64, 64)}
DOMAINS = {"bar_chart": "chart", "shape_count": "counting", "easy_vqa": "vqa"}


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> dict[str, tuple[ImageStore, list[Task], list[Task]]]:
    out = {}
    for name, cfg in CONFIGS.items():
        root = tmp_path_factory.mktemp(f"images-{name}")
        train, heldout = generate_tasks(name, {**cfg, "image_dir": str(root)})
        out[name] = (ImageStore(root), train, heldout)
    return out


def _tasks(generated, name) -> list[Task]:
    _, train, heldout = generated[name]
    return train + heldout


# --------------------------------------------------------------------------------------------
# Image store


def _image(colour=(200, 30, 30), size=(20, 12)) -> Image.Image:
    img = Image.new("RGB", size, (255, 255, 255))
    img.paste(colour, (2, 2, 9, 7))
    return img


def test_image_store_round_trip_and_digest_stability(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    img = _image()
    ref = store.put(img)
    hexd = ref.removeprefix("sha256:")
    assert re.fullmatch(r"sha256:[0-9a-f]{64}", ref)
    assert store.path(ref) == tmp_path / "s" / hexd[:2] / f"{hexd}.png"
    assert store.has(ref) and store.path(ref).is_file()
    back = store.open(ref)
    assert back.mode == "RGB" and back.size == img.size and back.tobytes() == img.tobytes()
    mtime = store.path(ref).stat().st_mtime_ns
    assert store.put(img.copy()) == ref  # same pixels, same digest; the file is not rewritten
    assert store.path(ref).stat().st_mtime_ns == mtime
    # the same pixels through other encodings: PNG bytes with metadata, an opaque RGBA image
    meta = PngImagePlugin.PngInfo()
    meta.add_text("Comment", "written by another tool")
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=meta, compress_level=1)
    assert store.put(buf.getvalue()) == ref
    assert store.put(img.convert("RGBA")) == ref
    assert pixel_digest(back) == ref
    # other pixels, other digest
    other = store.put(_image(colour=(30, 30, 200)))
    assert other != ref and store.iter_refs() == sorted([ref, other])
    store.verify(ref)
    # resolve_image: digests through several stores, and plain file paths
    empty = ImageStore(tmp_path / "empty")
    assert resolve_image(ref, [empty, store]).tobytes() == img.tobytes()
    plain = tmp_path / "plain.png"
    img.save(plain)
    assert resolve_image(str(plain), []).tobytes() == img.tobytes()


def test_image_store_errors_name_the_digest_and_where_they_looked(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "s")
    missing = "sha256:" + "ab" * 32
    with pytest.raises(ImageNotFoundError) as err:
        store.open(missing)
    assert missing in str(err.value) and str(store.path(missing)) in str(err.value)
    other = ImageStore(tmp_path / "t")
    with pytest.raises(ImageNotFoundError) as err:
        resolve_image(missing, [store, other])
    assert missing in str(err.value)
    assert str(store.path(missing)) in str(err.value) and str(other.path(missing)) in str(err.value)
    with pytest.raises(ValueError, match="malformed"):
        resolve_image("sha256:xyz", [store])
    with pytest.raises(ImageNotFoundError, match="neither a digest"):
        resolve_image(str(tmp_path / "nope.png"), [store])
    with pytest.raises(ValueError, match="not a readable image"):
        store.put(b"not an image")
    # an altered file is detected
    ref = store.put(_image())
    _image(colour=(0, 255, 0)).save(store.path(ref))
    with pytest.raises(ImageIntegrityError, match="altered"):
        store.verify(ref)


def test_default_image_root_follows_rlsd_cache_dir(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("RLSD_CACHE_DIR", str(tmp_path / "cache"))
    assert default_image_root() == tmp_path / "cache" / "images"
    monkeypatch.delenv("RLSD_CACHE_DIR")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert default_image_root() == Path.home() / ".cache" / "rlsd" / "images"


def test_contact_sheet(generated, tmp_path: Path) -> None:
    store, train, _ = generated["shape_count"]
    refs = [t.images[0] for t in train[:5]]
    out = contact_sheet(
        refs, store, tmp_path / "sheet.png", captions=[t.metadata["question"] for t in train[:5]]
    )
    with Image.open(out) as sheet:
        assert sheet.mode == "RGB" and sheet.width > 2 * 224 and sheet.height > 224
    with pytest.raises(ValueError, match="captions"):
        contact_sheet(refs, store, tmp_path / "x.png", captions=["one"])


# --------------------------------------------------------------------------------------------
# Every generator


def test_registered() -> None:
    assert TASK_GENERATORS["bar_chart"] is generate_bar_chart_tasks
    assert TASK_GENERATORS["shape_count"] is generate_shape_count_tasks
    assert TASK_GENERATORS["easy_vqa"] is generate_easy_vqa_tasks
    assert TASK_CONFIGS["bar_chart"] is BarChartTaskConfig
    assert TASK_CONFIGS["shape_count"] is ShapeCountTaskConfig
    assert TASK_CONFIGS["easy_vqa"] is EasyVQATaskConfig


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_counts_records_and_images(generated, name) -> None:
    store, train, heldout = generated[name]
    cfg = CONFIGS[name]
    assert len(train) == cfg["n_train"] and len(heldout) == cfg["n_heldout"]
    assert {t.split for t in train} == {"train"} and {t.split for t in heldout} == {"heldout"}
    tasks = train + heldout
    assert len({t.id for t in tasks}) == len(tasks)
    for t in tasks:
        assert t.verifier == "math-answer" and t.metadata["domain"] == DOMAINS[name]
        assert len(t.images) == 1 and t.images[0].startswith("sha256:")
        assert re.fullmatch(r"-?\d+", t.answer)
        assert t.privileged_context.rstrip().endswith(f"#### {t.answer}")
        img = store.open(t.images[0])
        assert img.mode == "RGB" and img.size == SIZES[name]
        assert pixel_digest(img) == t.images[0]
        # one user message: question + '#### <number>' instruction; no image placeholder token
        assert [m.role for m in t.prompt] == ["user"]
        text = t.prompt[0].content
        assert "#### <number>" in text and t.metadata["question"].casefold() in text.casefold()
        assert not re.search(r"<\|?image|<image>|\{\"type\"|vision_start", text)
    if name != "easy_vqa":
        assert f"generator:{name}:v1 seed={cfg['seed']}" in tasks[0].source


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_deterministic_by_seed(generated, name, tmp_path: Path) -> None:
    train, heldout = generate_tasks(name, {**CONFIGS[name], "image_dir": str(tmp_path)})
    _, train0, heldout0 = generated[name]
    assert [t.model_dump() for t in train + heldout] == [t.model_dump() for t in train0 + heldout0]
    # the image files are the same too (re-stored in a fresh store)
    store0 = generated[name][0]
    for t in (train + heldout)[:3]:
        assert ImageStore(tmp_path).open(t.images[0]).tobytes() == (
            store0.open(t.images[0]).tobytes()
        )
    other, _ = generate_tasks(
        name, {**CONFIGS[name], "seed": CONFIGS[name]["seed"] + 1, "image_dir": str(tmp_path)}
    )
    assert [t.id for t in other] != [t.id for t in train0]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_train_and_heldout_are_disjoint(generated, name) -> None:
    _, train, heldout = generated[name]
    assert not {t.id for t in train} & {t.id for t in heldout}
    assert not {t.images[0] for t in train} & {t.images[0] for t in heldout}
    if name == "bar_chart":
        key = lambda t: (tuple(t.metadata["labels"]), tuple(t.metadata["values"]))  # noqa: E731
    elif name == "shape_count":
        key = lambda t: json.dumps(t.metadata["objects"])  # noqa: E731
    else:
        key = lambda t: t.images[0]  # noqa: E731
    assert not {key(t) for t in train} & {key(t) for t in heldout}
    assert len({key(t) for t in train + heldout}) == len(train + heldout) or name == "easy_vqa"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_math_answer_scores_right_and_wrong_replies(generated, name) -> None:
    tasks = _tasks(generated, name)
    verifier = get_verifier("math-answer")
    right = [f"I looked at the image.\n#### {t.answer}" for t in tasks]
    wrong = [f"I looked at the image.\n#### {int(t.answer) + 1}" for t in tasks]
    assert [r.score for r in verifier.verify(right, tasks)] == [1.0] * len(tasks)
    assert [r.score for r in verifier.verify(wrong, tasks)] == [0.0] * len(tasks)
    # the teacher's privileged context ends with the answer in the same format
    assert all(r.passed for r in verifier.verify([t.privileged_context for t in tasks], tasks))


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_student_prompt_never_holds_the_privileged_text(generated, name) -> None:
    for t in _tasks(generated, name):
        prompt = "\n".join(m.content for m in t.prompt)
        assert t.privileged_context not in prompt
        body = t.privileged_context.split("\n#### ")[0]
        for line in body.splitlines():
            if len(line) >= 8:
                assert line not in prompt, line


# --------------------------------------------------------------------------------------------
# Answers are right by construction


def test_bar_chart_answers_recomputed_from_the_table(generated) -> None:
    tasks = _tasks(generated, "bar_chart")
    kinds = set()
    for t in tasks:
        rows = re.findall(r"^(\w+) \| (\d+)$", t.privileged_context, flags=re.M)
        table = {label: int(v) for label, v in rows}
        assert list(table) == t.metadata["labels"]
        assert list(table.values()) == t.metadata["values"]
        assert len(set(table.values())) == len(table)  # distinct values: a unique tallest bar
        q, kind = t.metadata["question"], t.metadata["question_type"]
        kinds.add(kind)
        named = re.findall(r"'(\w+)'", q)
        if kind == "value":
            want = table[named[0]]
        elif kind == "max":
            want = max(table.values())
        elif kind == "diff":
            want = table[named[0]] - table[named[1]]
            assert want > 0
        else:
            options = dict(re.findall(r"(\d+)\) (\w+)", q))
            assert sorted(options.values()) == sorted(table)
            tallest = max(table, key=table.get)
            want = int(next(n for n, lab in options.items() if lab == tallest))
        assert int(t.answer) == want, (q, table)
    assert kinds == {"value", "max", "argmax", "diff"}


def test_shape_count_answers_recounted_from_the_object_list(generated) -> None:
    cfg = ShapeCountTaskConfig(**SHAPES)
    tasks = _tasks(generated, "shape_count")
    for t in tasks:
        objects = t.metadata["objects"]
        kind, colour = t.metadata["target_kind"], t.metadata["target_colour"]
        count = sum(
            (kind is None or o["kind"] == kind) and (colour is None or o["colour"] == colour)
            for o in objects
        )
        assert int(t.answer) == count
        # the privileged list is the object list
        listed = re.findall(r"^\d+\. (\w+) (\w+) at \((\d+), (\d+)\)$", t.privileged_context, re.M)
        assert listed == [(o["colour"], o["kind"], str(o["x"]), str(o["y"])) for o in objects]
        assert cfg.min_shapes <= len(objects) <= cfg.max_shapes
        # non-overlapping and inside the image
        for i, a in enumerate(objects):
            assert a["x"] - 1.2 * a["r"] > 0 and a["x"] + 1.2 * a["r"] < cfg.image_size
            for b in objects[i + 1 :]:
                dist = ((a["x"] - b["x"]) ** 2 + (a["y"] - b["y"]) ** 2) ** 0.5
                assert dist >= 1.2 * (a["r"] + b["r"])
    assert {t.metadata["question_type"] for t in tasks} == {
        "total",
        "kind",
        "colour",
        "colour_kind",
    }


def test_easy_vqa_both_splits_with_numbered_options(generated) -> None:
    import easy_vqa

    _, train, heldout = generated["easy_vqa"]
    assert all("split=train" in t.source for t in train)
    assert all("split=test" in t.source for t in heldout)
    assert all(t.source.startswith("easy-vqa==1.0 ") for t in train + heldout)
    package = {"train": easy_vqa.get_train_questions(), "test": easy_vqa.get_test_questions()}
    for t in train + heldout:
        m = t.metadata
        texts, answers, image_ids = package[m["easy_vqa_split"]]
        i = m["question_index"]
        assert (texts[i], answers[i], image_ids[i]) == (
            m["question"],
            m["answer_word"],
            m["image_id"],
        )
        options = re.search(r"Answer with the option number: (.*)$", t.prompt[0].content, re.M)
        assert options is not None
        numbered = re.findall(r"(\d+)\) (\w+)", options.group(1))
        assert [int(n) for n, _ in numbered] == list(range(1, len(m["options"]) + 1))
        assert [w for _, w in numbered] == m["options"]
        assert m["options"][int(t.answer) - 1] == m["answer_word"]
        assert f"Correct answer: {m['answer_word']}." in t.privileged_context
        assert f"{t.answer}) {m['answer_word']}" in t.privileged_context
        assert len(m["options"]) == {"shape": 3, "colour": 8, "yes_no": 2}[m["question_type"]]


def test_easy_vqa_option_order_is_fixed_per_question(tmp_path: Path) -> None:
    a, _ = generate_easy_vqa_tasks(
        {"seed": 0, "n_train": 300, "n_heldout": 0, "image_dir": str(tmp_path)}
    )
    b, _ = generate_easy_vqa_tasks(
        {"seed": 9, "n_train": 300, "n_heldout": 0, "image_dir": str(tmp_path)}
    )
    by_q = {(t.metadata["image_id"], t.metadata["question"]): t.metadata["options"] for t in a}
    shared = [t for t in b if (t.metadata["image_id"], t.metadata["question"]) in by_q]
    assert shared  # the two samples overlap; the shared questions show the same option order
    assert all(
        by_q[(t.metadata["image_id"], t.metadata["question"])] == t.metadata["options"]
        for t in shared
    )
    assert len({t.answer for t in a if t.metadata["question_type"] == "yes_no"}) == 2


def test_question_types_filter(tmp_path: Path) -> None:
    train, _ = generate_bar_chart_tasks(
        {"n_train": 4, "n_heldout": 0, "question_types": ["diff"], "image_dir": str(tmp_path)}
    )
    assert {t.metadata["question_type"] for t in train} == {"diff"}
    train, _ = generate_easy_vqa_tasks(
        {"n_train": 5, "n_heldout": 0, "question_types": ["colour"], "image_dir": str(tmp_path)}
    )
    assert {t.metadata["question_type"] for t in train} == {"colour"}
    with pytest.raises(ValueError, match="distinct bar values"):
        BarChartTaskConfig(min_value=1, max_value=4, max_bars=6)
    with pytest.raises(ValueError, match="lower max_shapes"):
        ShapeCountTaskConfig(max_shapes=30, max_radius=0.2)


# --------------------------------------------------------------------------------------------
# Snapshots carry their images


@pytest.fixture()
def visual_snapshot(generated, tmp_path: Path):
    tasks, stores = [], []
    for name in CONFIGS:
        store, train, heldout = generated[name]
        tasks += train[:3] + heldout[:2]
        stores.append(store)
    snap, created = write_snapshot(
        tasks, tmp_path / "snaps", name="visual", manifest_extra={}, image_stores=stores
    )
    assert created
    return snap, tasks, stores


def test_snapshot_round_trip_with_images(visual_snapshot, tmp_path: Path) -> None:
    path, tasks, stores = visual_snapshot
    snap = load_snapshot(path)
    assert sorted(snap.tasks, key=lambda t: t.id) == sorted(tasks, key=lambda t: t.id)
    refs = sorted({r for t in tasks for r in t.images})
    files = sorted((path / "images").glob("??/*.png"))
    assert [f"sha256:{f.stem}" for f in files] == refs
    assert all(f.parent.name == f.stem[:2] for f in files)
    assert snap.manifest.images == ImagesInfo(
        dir="images", count=len(refs), bytes=sum(f.stat().st_size for f in files)
    )
    for t in snap.tasks:
        assert snap.image_store.has(t.images[0])
        assert pixel_digest(snap.image_store.open(t.images[0])) == t.images[0]
    # the same tasks give the same digest wherever they are written
    again, _ = write_snapshot(
        tasks, tmp_path / "elsewhere", name="visual", manifest_extra={}, image_stores=stores
    )
    assert load_snapshot(again).digest == snap.digest


def test_snapshot_detects_missing_or_altered_images(visual_snapshot, tmp_path: Path) -> None:
    path, tasks, _ = visual_snapshot
    ref = tasks[0].images[0]
    hexd = ref.removeprefix("sha256:")

    altered = tmp_path / "altered"
    shutil.copytree(path, altered)
    image = altered / "images" / hexd[:2] / f"{hexd}.png"
    img = Image.open(image).convert("RGB")
    img.putpixel((0, 0), (1, 2, 3))
    img.save(image)
    with pytest.raises(SnapshotError, match="modified after ingestion"):
        load_snapshot(altered)

    missing = tmp_path / "missing"
    shutil.copytree(path, missing)
    (missing / "images" / hexd[:2] / f"{hexd}.png").unlink()
    with pytest.raises(SnapshotError, match=f"image {ref} .*missing"):
        load_snapshot(missing)


def test_write_snapshot_needs_every_image(generated, tmp_path: Path) -> None:
    _, train, _ = generated["shape_count"]
    with pytest.raises(SnapshotError, match=train[0].images[0]) as err:
        write_snapshot(
            train[:2],
            tmp_path,
            name="x",
            manifest_extra={},
            image_stores=[ImageStore(tmp_path / "e")],
        )
    assert str(tmp_path / "e") in str(err.value)
    by_path = train[0].model_copy(update={"images": [str(tmp_path / "some.png")]})
    with pytest.raises(SnapshotError, match="by digest only"):
        write_snapshot([by_path], tmp_path, name="x", manifest_extra={})
    assert not list(tmp_path.glob("x-*"))  # nothing half-written is left behind


def test_text_snapshot_has_no_images(tmp_path: Path) -> None:
    from rlsd.tasks import generate_arithmetic_tasks

    train, heldout = generate_arithmetic_tasks({"n_train": 4, "n_heldout": 2, "few_shot": 0})
    path, _ = write_snapshot(train + heldout, tmp_path, name="text", manifest_extra={})
    snap = load_snapshot(path)
    assert snap.manifest.images is not None and snap.manifest.images.count == 0
    assert not (path / "images").exists()
    assert snap.image_store.iter_refs() == []
