"""The stand-in's folders (``input/``, ``output/``, ``temp/`` under a base directory) and path rules.

Mirrors ComfyUI's ``folder_paths`` helpers that the API exposes: ``name [output]`` annotations,
save-path counters (``prefix_NNNNN_.png`` continuing from files on disk) and the containment
checks of /view and /upload/image.

Invariant: every path returned here for reading or writing lies inside one of the three folders;
anything that would escape yields ``None`` or raises ``ValueError`` before a file is touched.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

FOLDER_TYPES = ("input", "output", "temp")
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"})
_ANNOTATION = re.compile(r"^(.*) \[(input|output|temp)\]$")


@dataclass(frozen=True)
class Folders:
    """The base directory of one stand-in server and its three ComfyUI folders."""

    base: Path

    @classmethod
    def create(cls, base_dir: str | os.PathLike[str]) -> Folders:
        base = Path(base_dir).resolve()
        for name in FOLDER_TYPES:
            (base / name).mkdir(parents=True, exist_ok=True)
        return cls(base)

    def by_type(self, folder_type: str | None) -> Path | None:
        """The folder for ``input``/``output``/``temp``; ``None`` for anything else."""
        return self.base / folder_type if folder_type in FOLDER_TYPES else None

    @property
    def input(self) -> Path:
        return self.base / "input"

    @property
    def output(self) -> Path:
        return self.base / "output"

    @property
    def temp(self) -> Path:
        return self.base / "temp"

    def annotated(self, name: str, default_type: str = "input") -> tuple[str, Path | None]:
        """Split ``"file.png [output]"`` into the name and its folder (``None`` when not annotated)."""
        match = _ANNOTATION.match(name)
        if match:
            return match.group(1), self.by_type(match.group(2))
        return name, None

    def annotated_path(self, name: str, default_type: str = "input") -> Path:
        """Where a LoadImage-style value (``sub/name.png`` or ``name.png [output]``) points."""
        name, folder = self.annotated(name)
        folder = folder or self.by_type(default_type) or self.input
        return folder / name

    def exists_annotated(self, name: str) -> bool:
        try:
            path = self.annotated_path(str(name))
        except (TypeError, ValueError):
            return False
        return inside(path, self.base) and path.is_file()

    def input_images(self) -> list[str]:
        """Top-level image files of ``input/``, sorted (what LoadImage lists in /object_info)."""
        try:
            names = [p.name for p in self.input.iterdir() if p.is_file()]
        except OSError:
            return []
        return sorted(n for n in names if Path(n).suffix.lower() in IMAGE_EXTENSIONS)


def inside(path: Path, root: Path) -> bool:
    """True when ``path`` (normalised, symlinks not followed) is ``root`` or below it."""
    path_abs = os.path.abspath(path)
    root_abs = os.path.abspath(root)
    return os.path.commonpath((path_abs, root_abs)) == root_abs


def save_path(output_dir: Path, filename_prefix: str) -> tuple[Path, str, int, str]:
    """``(folder, file stem, next counter, subfolder)`` for a SaveImage-style prefix.

    Like ComfyUI's ``get_save_image_path``: the prefix's directory part is the subfolder, and the
    counter continues after the highest ``<stem>_NNNNN_`` already in that folder.
    """
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    stem = os.path.basename(os.path.normpath(filename_prefix))
    folder = Path(os.path.join(output_dir, subfolder))
    if not inside(folder, output_dir):
        raise ValueError(
            "**** ERROR: Saving image outside the output folder is not allowed.\n"
            f" full_output_folder: {os.path.abspath(folder)}\n"
            f"         output_dir: {output_dir}\n"
            f"         commonpath: {os.path.commonpath((output_dir, os.path.abspath(folder)))}"
        )
    counter = 1
    pattern = re.compile(re.escape(stem) + r"_(\d+)_")
    try:
        for existing in os.listdir(folder):
            match = pattern.match(existing)
            if match:
                counter = max(counter, int(match.group(1)) + 1)
    except FileNotFoundError:
        folder.mkdir(parents=True, exist_ok=True)
    return folder, stem, counter, subfolder
