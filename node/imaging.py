"""Photos as the node keeps them: any common image re-encoded to a bounded, metadata-free JPEG (Pillow).

People photograph things at home: a phone's JPEG carries EXIF (GPS position,
device, time) and may be 10 MB. :func:`reencode` decodes the picture, turns
it upright by its EXIF orientation, and writes a fresh baseline JPEG of the
pixels alone -- no EXIF, GPS, XMP, ICC profile or comment survives, because
nothing but the pixels is handed to the encoder -- at most :data:`MAX_SIDE`
pixels on its longer side and at most :data:`MAX_BYTES` bytes (the quality
steps down until it fits). Decoding is bounded too: at most
:data:`MAX_INPUT_PIXELS`, so a small file that claims to be a gigapixel image
is refused before it is decompressed.
"""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError
from swapmeet.protocol.errors import InvalidObject

MAX_SIDE = 1600  # pixels, the longer side
MAX_BYTES = 300 * 1024  # the re-encoded JPEG
MAX_INPUT_PIXELS = 50_000_000  # a 50-megapixel camera; more is refused before decoding
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF")  # what people upload; no exotic decoders
_QUALITIES = (85, 75, 65, 55, 45, 35)
JPEG_MAGIC = b"\xff\xd8\xff"


def reencode(data: bytes, path: str = "photo") -> bytes:
    """``data`` (an image file's bytes) as a metadata-free JPEG within the bounds above.

    Raises :class:`InvalidObject` (at ``path``) for anything that is not an image of
    :data:`FORMATS` or is too large to decode.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=FORMATS) as img:
                if img.width * img.height > MAX_INPUT_PIXELS:
                    raise InvalidObject(path, f"is {img.width}x{img.height} pixels, over {MAX_INPUT_PIXELS}", "image")
                img.seek(0)  # the first frame of an animation
                upright = ImageOps.exif_transpose(img)
                pixels = upright.convert("RGB")
    except InvalidObject:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise InvalidObject(path, f"is not an image this node reads ({', '.join(FORMATS)}): {exc}", "image") from None
    except (OSError, ValueError, SyntaxError) as exc:  # what Pillow raises for truncated or damaged files
        raise InvalidObject(path, f"is a damaged image: {exc}", "image") from None
    pixels.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    # A fresh image holding only the pixels: nothing of the source's metadata (info, EXIF, ICC) can follow.
    clean = Image.new("RGB", pixels.size)
    clean.paste(pixels)
    while True:
        for quality in _QUALITIES:
            out = io.BytesIO()
            clean.save(out, "JPEG", quality=quality, optimize=True)
            if out.tell() <= MAX_BYTES:
                return out.getvalue()
        # still too big at the lowest quality (a very noisy picture): shrink and try again
        clean = clean.resize((max(1, clean.width * 3 // 4), max(1, clean.height * 3 // 4)), Image.Resampling.LANCZOS)
