"""Content-addressed image storage for multimodal tasks, and contact sheets of a few samples.

A task's ``images`` field holds references of the form ``"sha256:<64 hex>"``. The digest is
taken over the image's *pixels*, not over a file's bytes::

    sha256(b"rlsd-image/1\\nRGB <width> <height>\\n" + <raw RGB bytes, row-major>)

so the same pixels always give the same reference, whatever PNG encoder, zlib version or
metadata produced a file. Every image is canonicalised to 8-bit RGB first (an alpha channel
is composited onto white). The store keeps one PNG per digest at
``<root>/<hex[:2]>/<hex>.png``, written atomically (temporary file, then rename), so a
concurrent reader never sees a half-written image and two writers of the same image agree.

:func:`resolve_image` opens a reference from a list of stores, and also accepts a plain file
path (the other form ``Task.images`` allows). The default store lives in
``$RLSD_CACHE_DIR/images`` (default ``~/.cache/rlsd/images``); dataset snapshots carry their own
store (see :mod:`rlsd.context.snapshot`).
"""

from __future__ import annotations

import hashlib
import io
import math
import os
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

DIGEST_PREFIX = "sha256:"
_HEADER = b"rlsd-image/1\n"
_REF_RE = re.compile(r"sha256:([0-9a-f]{64})")

ImageInput = Image.Image | bytes | bytearray | os.PathLike


class ImageNotFoundError(FileNotFoundError):
    """A referenced image is in none of the places searched."""


class ImageIntegrityError(ValueError):
    """A stored image file does not hold the pixels its digest names."""


def default_image_root() -> Path:
    """``$RLSD_CACHE_DIR/images``, else ``$XDG_CACHE_HOME/rlsd/images`` or ``~/.cache/rlsd/images``."""
    if env := os.environ.get("RLSD_CACHE_DIR"):
        return Path(env) / "images"
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "rlsd" / "images"


def is_digest_ref(ref: str) -> bool:
    """True for a well-formed ``"sha256:<64 lowercase hex>"`` reference."""
    return isinstance(ref, str) and _REF_RE.fullmatch(ref) is not None


def ref_hex(ref: str) -> str:
    """The hex part of a digest reference; ``ValueError`` when ``ref`` is not one."""
    m = _REF_RE.fullmatch(ref) if isinstance(ref, str) else None
    if m is None:
        raise ValueError(f"not an image digest reference (want 'sha256:<64 hex>'): {ref!r}")
    return m.group(1)


def relative_image_path(ref: str) -> Path:
    """Where a digest lives inside a store: ``<hex[:2]>/<hex>.png``."""
    hexd = ref_hex(ref)
    return Path(hexd[:2]) / f"{hexd}.png"


def canonical_rgb(image: Image.Image) -> Image.Image:
    """The image as 8-bit RGB; transparency is composited onto white."""
    if image.mode == "RGB":
        return image
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def pixel_digest(image: Image.Image) -> str:
    """The reference of ``image``: sha256 over its canonical RGB pixels and size."""
    rgb = canonical_rgb(image)
    h = hashlib.sha256(_HEADER)
    h.update(f"RGB {rgb.width} {rgb.height}\n".encode())
    h.update(rgb.tobytes())
    return DIGEST_PREFIX + h.hexdigest()


def _load(image: ImageInput) -> Image.Image:
    if isinstance(image, Image.Image):
        return canonical_rgb(image)
    if isinstance(image, bytes | bytearray):
        try:
            with Image.open(io.BytesIO(bytes(image))) as im:
                im.load()
                return canonical_rgb(im)
        except (OSError, Image.UnidentifiedImageError) as exc:
            raise ValueError(f"bytes are not a readable image: {exc}") from exc
    if isinstance(image, os.PathLike):
        with Image.open(os.fspath(image)) as im:
            im.load()
            return canonical_rgb(im)
    raise TypeError(f"expected a PIL image, PNG/JPEG bytes or a path, got {type(image).__name__}")


def _open_rgb(path: Path) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        rgb = canonical_rgb(im)
        return rgb.copy() if rgb is im else rgb


def _atomic_write_png(image: Image.Image, dest: Path) -> int:
    """Write ``image`` as PNG to ``dest`` via a temporary file + rename; returns the size."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".tmp", dir=dest.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            image.save(fh, format="PNG", compress_level=6)
        os.chmod(tmp, 0o644)
        os.replace(tmp, dest)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return dest.stat().st_size


class ImageStore:
    """Images stored by pixel digest under ``root`` (see the module docstring)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).expanduser()

    def __repr__(self) -> str:
        return f"ImageStore({str(self.root)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ImageStore) and self.root == other.root

    def __hash__(self) -> int:
        return hash(self.root)

    def put(self, image: ImageInput) -> str:
        """Store ``image`` (a PIL image, encoded image bytes or a file path); returns its ref."""
        rgb = _load(image)
        ref = pixel_digest(rgb)
        dest = self.root / relative_image_path(ref)
        if not dest.exists():
            _atomic_write_png(rgb, dest)
        return ref

    def path(self, ref: str) -> Path:
        """The file a digest maps to in this store (whether or not it exists)."""
        return self.root / relative_image_path(ref)

    def has(self, ref: str) -> bool:
        return is_digest_ref(ref) and self.path(ref).is_file()

    def open(self, ref: str) -> Image.Image:
        """The image ``ref`` names, as RGB; :class:`ImageNotFoundError` when it is not here."""
        p = self.path(ref)
        if not p.is_file():
            raise ImageNotFoundError(f"image {ref} not found: looked for {p}")
        return _open_rgb(p)

    def verify(self, ref: str) -> None:
        """Raise unless the stored file exists and decodes to the pixels ``ref`` names."""
        img = self.open(ref)
        got = pixel_digest(img)
        if got != ref:
            raise ImageIntegrityError(
                f"{self.path(ref)}: pixels hash to {got[:23]}..., not {ref[:23]}...; "
                "the image file was altered"
            )

    def iter_refs(self) -> list[str]:
        """Every digest stored here, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            DIGEST_PREFIX + p.stem
            for p in self.root.glob("??/*.png")
            if is_digest_ref(DIGEST_PREFIX + p.stem)
        )


def default_image_store() -> ImageStore:
    return ImageStore(default_image_root())


def image_store_for(image_dir: Path | str | None) -> ImageStore:
    """The store a generator config's ``image_dir`` names (None: the default store)."""
    return ImageStore(image_dir) if image_dir is not None else default_image_store()


def _as_stores(stores: ImageStore | Sequence[ImageStore] | None) -> list[ImageStore]:
    if stores is None:
        return [default_image_store()]
    if isinstance(stores, ImageStore):
        return [stores]
    return list(stores)


def find_image(ref: str, stores: ImageStore | Sequence[ImageStore] | None) -> Path:
    """The file of ``ref``: a digest looked up in ``stores`` in order, or a plain file path."""
    searched = _as_stores(stores)
    if is_digest_ref(ref):
        for store in searched:
            p = store.path(ref)
            if p.is_file():
                return p
        where = ", ".join(str(s.path(ref)) for s in searched) or "(no image stores given)"
        raise ImageNotFoundError(f"image {ref} not found; looked in: {where}")
    if isinstance(ref, str) and ref.startswith(DIGEST_PREFIX):
        raise ValueError(f"malformed image digest reference (want 'sha256:<64 hex>'): {ref!r}")
    p = Path(ref).expanduser()
    if p.is_file():
        return p
    raise ImageNotFoundError(
        f"image {ref!r} is neither a digest reference ('sha256:<64 hex>') nor an existing file"
    )


def resolve_image(ref: str, stores: ImageStore | Sequence[ImageStore] | None = None) -> Image.Image:
    """Open ``ref`` (a digest looked up in ``stores``, or a plain file path) as RGB."""
    return _open_rgb(find_image(ref, stores))


# --------------------------------------------------------------------------------------------
# Contact sheets: a few task images in one PNG, logged with runs.


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError, ImportError):  # Pillow built without FreeType
        return ImageFont.load_default()


def _wrap(text: str, draw: ImageDraw.ImageDraw, font, width: int, max_lines: int) -> list[str]:
    words = text.replace("\n", " ").split()
    lines: list[str] = []
    cur = ""
    for word in words:
        trial = f"{cur} {word}".strip()
        if draw.textlength(trial, font=font) <= width or not cur:
            cur = trial
        else:
            lines.append(cur)
            cur = word
        if len(lines) == max_lines:
            break
    if cur and len(lines) < max_lines:
        lines.append(cur)
    kept = " ".join(lines)
    if len(kept) < len(" ".join(words)) and lines:
        last = lines[-1]
        while last and draw.textlength(last + "...", font=font) > width:
            last = last[:-1]
        lines[-1] = last + "..."
    return lines


def contact_sheet(
    refs: Sequence[str],
    store: ImageStore | Sequence[ImageStore] | None,
    out_path: Path | str,
    captions: Sequence[str] | None = None,
    *,
    cell: int = 224,
    columns: int | None = None,
    caption_lines: int = 3,
) -> Path:
    """Write one PNG grid of the images ``refs`` (each fitted into ``cell`` pixels), with captions.

    ``store`` is the store (or stores) the digests are looked up in; plain file paths work too.
    Returns ``out_path``. Meant for a handful of samples logged with a run.
    """
    refs = list(refs)
    if not refs:
        raise ValueError("contact_sheet: no images given")
    if captions is not None and len(captions) != len(refs):
        raise ValueError(
            f"contact_sheet: {len(captions)} captions for {len(refs)} images; give one per image"
        )
    stores = _as_stores(store)
    cols = columns or min(len(refs), math.ceil(math.sqrt(len(refs))))
    rows = math.ceil(len(refs) / cols)
    font = _font(max(12, cell // 18))
    line_h = int(font.getbbox("Ag")[3]) + 3 if hasattr(font, "getbbox") else 14
    text_h = line_h * caption_lines + 6 if captions is not None else 0
    pad = 6
    sheet = Image.new(
        "RGB", (cols * (cell + pad) + pad, rows * (cell + text_h + pad) + pad), (255, 255, 255)
    )
    draw = ImageDraw.Draw(sheet)
    for i, ref in enumerate(refs):
        img = resolve_image(ref, stores)
        scale = min(cell / img.width, cell / img.height)
        if scale != 1:  # small images (64x64) are blown up crisp, large ones shrunk smooth
            img = img.resize(
                (max(1, round(img.width * scale)), max(1, round(img.height * scale))),
                Image.Resampling.NEAREST if scale > 1 else Image.Resampling.LANCZOS,
            )
        r, c = divmod(i, cols)
        x0 = pad + c * (cell + pad)
        y0 = pad + r * (cell + text_h + pad)
        sheet.paste(img, (x0 + (cell - img.width) // 2, y0 + (cell - img.height) // 2))
        draw.rectangle((x0 - 1, y0 - 1, x0 + cell, y0 + cell), outline=(200, 200, 200))
        if captions is not None:
            for j, line in enumerate(_wrap(str(captions[i]), draw, font, cell, caption_lines)):
                draw.text((x0, y0 + cell + 3 + j * line_h), line, fill=(0, 0, 0), font=font)
    out = Path(out_path)
    _atomic_write_png(sheet, out)
    return out


__all__ = [
    "DIGEST_PREFIX",
    "ImageIntegrityError",
    "ImageNotFoundError",
    "ImageStore",
    "canonical_rgb",
    "contact_sheet",
    "default_image_root",
    "default_image_store",
    "find_image",
    "image_store_for",
    "is_digest_ref",
    "pixel_digest",
    "ref_hex",
    "relative_image_path",
    "resolve_image",
]
