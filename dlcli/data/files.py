"""Datasets from the user's own files, for classification or regression (`data.task`):

    data.name: npz           arrays `x_key` (N, ...) and `y_key` (N,) or (N, k) of one .npz file
    data.name: csv           a CSV file with a header row: feature columns and a `label` column
    data.name: image_folder  a folder with one subfolder of images per class (classification)

Each is split like the built-in datasets (`split_by_fraction` with `split_seed`) unless
the file gives its own parts: npz arrays `x_train`, `y_train`, `x_val`, ... (named
after the keys), a CSV `split_column` holding train, val or test, or an image folder
holding train/, val/ and test/, each with its class subfolders. Inputs are scaled as
`normalize` says (standard: the training set's scalar mean and deviation, as the image
datasets; per_feature: each column's or pixel's own; unit: as read, which must lie in
[0, 1]; none: as read), or `binarize`d. 8-bit images (an image folder, an npz of uint8)
are pixels: divided by 255 first, as MNIST is.

A path in a config file is relative to that file's folder (`anchor_data_paths`); the
resolved config.yaml holds it absolute. Shapes and classes are known once the files are
read: `load` records them on the section, and a run folder gives them back from its
preprocessing.json (`info_from_run`), so `dlcli predict` needs no data. Parsing a
config reads at most a header (of the CSV, of the npz's x, of one image). Every file
read is named with its sha256 in the preprocessing record, and every problem with a
file is one line naming it.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import os
import zipfile
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np

from dlcli.data import (DATASETS, DatasetInfo, DatasetSpec, Splits, binarize, scaled, split_by_fraction, standardize,
                        standardize_features)
from dlcli.errors import BadInput
from dlcli.schema import bounded, seed_field

SPLITS = ("train", "val", "test")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


@dataclasses.dataclass
class FileDataset(DatasetSpec):
    """What the three file datasets share: the path, the task, the split and the scaling."""

    path_fields: ClassVar[tuple[str, ...]] = ("path",)
    what: ClassVar[str] = "file"  # what `path` names, in messages

    name: str = ""
    path: str | None = None
    task: Literal["classification", "regression"] = "classification"
    val_fraction: float = bounded(0.1, low=0.0, high=0.5, low_open=True)
    test_fraction: float = bounded(0.2, low=0.0, high=0.5, low_open=True)
    split_seed: int = seed_field()
    normalize: Literal["standard", "per_feature", "unit", "none"] = "standard"
    binarize: float | None = bounded(None, low=0.0, high=1.0, low_open=True, high_open=True)
    subset: int | None = bounded(None, low=1)
    known: DatasetInfo | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.path:  # a path given on the command line (--set) is relative to the current folder
            self.path = os.path.abspath(os.path.expanduser(self.path))

    def validate(self, path: str) -> None:
        if not self.path:
            raise BadInput(f"{path}.path is empty; set it to your {self.what} (relative to the config file's folder)")

    def info(self) -> DatasetInfo:
        """The shapes once the data is read (or restored from a run), else a guess from a header."""
        return self.known or self.peek()

    def info_from_run(self, preprocessing: dict) -> DatasetInfo:
        self.known = DatasetInfo(tuple(preprocessing["input_shape"]), preprocessing["n_outputs"], self.task)
        return self.known

    def peek(self) -> DatasetInfo:
        """The shapes as far as a header tells them (classes are counted when read)."""
        raise NotImplementedError

    def file(self) -> Path:
        """The path, which must exist; `BadInput` otherwise."""
        found = Path(self.path)
        if not found.exists():
            raise BadInput(f"data.path {found} does not exist; give the path of your {self.what} "
                           "(in a config file: relative to the config file's folder)")
        return found

    def finish(self, x_parts: dict[str, np.ndarray], y_parts: dict[str, np.ndarray], pixels: bool,
               record: dict) -> Splits:
        """Raw arrays -> scaled Splits with their preprocessing record. `x_parts`/`y_parts`
        hold either {"all": ...} (split here) or {"train", "val", "test"}; labels of any
        kind become class indices (their names kept, in sorted order) for classification
        or float32 (N, k) targets for regression; the known shapes are recorded."""
        y_parts, classes = self.targets(y_parts)
        x_parts = {part: (x.astype(np.float32) / 255.0 if pixels else x.astype(np.float32)) for part, x in x_parts.items()}
        for part, x in x_parts.items():
            if not np.isfinite(x).all():
                raise BadInput(f"{self.path}: the {part} inputs hold NaN or infinite values; replace them with numbers")
        shape = next(iter(x_parts.values())).shape[1:]
        n_outputs = len(classes) if classes is not None else next(iter(y_parts.values())).shape[1]
        info = DatasetInfo(tuple(int(d) for d in shape), n_outputs, self.task)
        if "all" in x_parts:
            x, y = x_parts["all"], y_parts["all"]
            self.check_enough(len(x))
            splits = split_by_fraction(x, y, self.val_fraction, self.test_fraction, info, self.split_seed)
        else:
            for part in SPLITS:
                if len(x_parts[part]) == 0:
                    raise BadInput(f"{self.path}: the {part} part has no examples; give it at least one")
            splits = Splits(info, *((x_parts[p], y_parts[p]) for p in SPLITS))
        if self.subset is not None:
            splits = Splits(info, *((x[: self.subset], y[: self.subset]) for x, y in (splits.train, splits.val, splits.test)))
        splits.preprocessing = {**record, "inputs": "pixels" if pixels else "features",
                                **({"classes": classes} if classes is not None else {})}
        self.known = info
        return self.scaled(splits)

    def targets(self, y_parts: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], list[str] | None]:
        """Labels -> (int32 class indices, class names) or (float32 (N, k) targets, None)."""
        if self.task == "regression":
            out = {}
            for part, y in y_parts.items():
                try:
                    values = np.asarray(y, np.float64)
                except ValueError:
                    raise BadInput(f"{self.path}: data.task is regression but the targets are not numbers; "
                                   "give numeric targets or set data.task: classification") from None
                if not np.isfinite(values).all():
                    raise BadInput(f"{self.path}: the {part} targets hold NaN or infinite values; replace them with numbers")
                out[part] = values.reshape(len(values), -1).astype(np.float32)
            return out, None
        for part, y in y_parts.items():
            if y.ndim != 1:
                raise BadInput(f"{self.path}: classification labels must be one per example, shape (N,), got {y.shape[1:]} "
                               "per example; give one label each, or set data.task: regression")
            if y.dtype.kind == "f" and not (np.isfinite(y).all() and (y == np.round(y)).all()):
                raise BadInput(f"{self.path}: data.task is classification but the {part} labels are fractional numbers; "
                               "give whole-number or text labels, or set data.task: regression")
        labels = {part: (y.astype(np.int64) if y.dtype.kind == "f" else y) for part, y in y_parts.items()}
        classes, inverse = np.unique(np.concatenate(list(labels.values())), return_inverse=True)
        if len(classes) < 2:
            raise BadInput(f"{self.path}: every example has the label {classes[0]!r}; a classifier needs at least 2 classes")
        out, start = {}, 0
        for part, y in labels.items():
            out[part] = inverse[start: start + len(y)].astype(np.int32)
            start += len(y)
        return out, [str(c) for c in classes.tolist()]

    def check_enough(self, n: int) -> None:
        """`BadInput` unless a split by fraction leaves every part at least one example."""
        def parts(k):
            n_test, n_val = int(round(k * self.test_fraction)), int(round(k * self.val_fraction))
            return n_test, n_val, k - n_test - n_val

        if min(parts(n)) < 1:
            least = next(k for k in range(n, 10 ** 6) if min(parts(k)) >= 1)
            raise BadInput(f"{self.path} has {n} examples, too few for a {self.val_fraction:g} validation and "
                           f"{self.test_fraction:g} test fraction (each part needs one); give at least {least} examples")

    def scaled(self, splits: Splits) -> Splits:
        if self.binarize is not None:
            return binarize(splits, self.binarize)
        if self.normalize == "standard":
            return standardize(splits)
        if self.normalize == "per_feature":
            return standardize_features(splits)
        if self.normalize == "unit":
            low, high = min(float(x.min()) for x, _ in _parts(splits)), max(float(x.max()) for x, _ in _parts(splits))
            if low < 0 or high > 1:
                raise BadInput(f"data.normalize is unit but {self.path} holds values from {low:g} to {high:g}; "
                               "use normalize: none (as they are), standard or per_feature")
        return scaled(splits, {"normalize": self.normalize})


def _parts(splits: Splits):
    return splits.train, splits.val, splits.test


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


# ----- npz -----------------------------------------------------------------------------

@DATASETS.register("npz")
@dataclasses.dataclass
class NpzConfig(FileDataset):
    """Arrays of a NumPy .npz file (np.savez): inputs `x_key`, labels or targets `y_key`."""

    summary: ClassVar[str] = "your arrays: an .npz file (data.path) with inputs x (N, ...) and labels y (N,)"
    what: ClassVar[str] = ".npz file (np.savez(path, x=inputs, y=labels))"
    name: str = "npz"
    x_key: str = "x"
    y_key: str = "y"

    def peek(self) -> DatasetInfo:
        shape = npz_shape(Path(self.path), self.x_key) if self.path else None
        return DatasetInfo(tuple(shape[1:]) if shape else (1,), 0 if self.task == "classification" else 1, self.task)

    def load(self, data_dir: Path) -> Splits:
        path = self.file()
        try:
            with np.load(path, allow_pickle=False) as archive:
                arrays = {key: archive[key] for key in archive.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
            raise BadInput(f"{path} is not a readable .npz file ({err}); write it with np.savez") from None
        own = [f"{key}_{part}" for part in SPLITS for key in (self.x_key, self.y_key)]
        if any(key in arrays for key in own):
            missing = [key for key in own if key not in arrays]
            if missing:
                raise BadInput(f"{path} holds some of its own splits but not {', '.join(missing)}; give all of "
                               f"{', '.join(own)}, or only {self.x_key} and {self.y_key}")
            xs = {part: arrays[f"{self.x_key}_{part}"] for part in SPLITS}
            ys = {part: arrays[f"{self.y_key}_{part}"] for part in SPLITS}
        else:
            for key in (self.x_key, self.y_key):
                if key not in arrays:
                    raise BadInput(f"{path} has no array {key!r} (it holds {', '.join(sorted(arrays)) or 'nothing'}); "
                                   f"set data.x_key and data.y_key to the names of its inputs and labels")
            xs, ys = {"all": arrays[self.x_key]}, {"all": arrays[self.y_key]}
        for part in xs:
            x, y = xs[part], ys[part]
            if x.dtype.kind not in "biuf" or y.dtype.kind not in "biufUS":
                raise BadInput(f"{path}: {self.x_key} must hold numbers and {self.y_key} numbers or text, got "
                               f"{x.dtype} and {y.dtype}")
            if x.ndim < 2 or len(x) != len(y):
                raise BadInput(f"{path}: inputs of shape {x.shape} and labels of shape {y.shape} do not match; give "
                               f"x (N, features...) and y (N,) with the same N")
        return self.finish(xs, ys, pixels=all(x.dtype == np.uint8 for x in xs.values()),
                           record={"files": {str(path.absolute()): sha256(path)}})


def npz_shape(path: Path, key: str) -> tuple[int, ...] | None:
    """The shape of array `key` of an .npz file from its header alone; None if unreadable."""
    try:
        with zipfile.ZipFile(path) as archive, archive.open(f"{key}.npy") as member:
            version = np.lib.format.read_magic(member)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            return read_header(member)[0]
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        return None


# ----- csv -----------------------------------------------------------------------------

@DATASETS.register("csv")
@dataclasses.dataclass
class CsvConfig(FileDataset):
    """A CSV file with a header row: numeric `features` columns (null: every column but
    the label and split columns) and a `label` column (text or numbers)."""

    summary: ClassVar[str] = "your table: a CSV file (data.path) with a header, feature columns and a label column"
    what: ClassVar[str] = "CSV file (a header row, then one example per row)"
    name: str = "csv"
    label: str | None = None
    features: list[str] | None = None
    split_column: str | None = None
    normalize: Literal["standard", "per_feature", "unit", "none"] = "per_feature"

    def validate(self, path: str) -> None:
        super().validate(path)
        if not self.label:
            raise BadInput(f"{path}.label is empty; name the CSV column that holds the labels (or targets)")
        if self.features is not None and (self.label in self.features or self.split_column in self.features):
            raise BadInput(f"{path}.features names the label or split column; list only the input columns")

    def peek(self) -> DatasetInfo:
        n = len(self.features) if self.features else None
        if n is None and self.path and Path(self.path).is_file():
            try:
                with open(self.path, newline="", encoding="utf-8") as f:
                    header = next(csv.reader(f), [])
                n = len([c for c in header if c not in (self.label, self.split_column)])
            except (OSError, UnicodeDecodeError, csv.Error):
                n = None
        return DatasetInfo((n or 1,), 0 if self.task == "classification" else 1, self.task)

    def feature_columns(self, header: list[str], where: str) -> list[str]:
        """The input columns of a file with this `header`; `BadInput` naming any missing."""
        wanted = self.features or [c for c in header if c not in (self.label, self.split_column)]
        missing = [c for c in wanted if c not in header]
        if missing:
            raise BadInput(f"{where} has no column {missing[0]!r} (its header: {', '.join(header)}); "
                           "fix data.features or the file's header")
        if not wanted:
            raise BadInput(f"{where} has no feature columns beside {self.label!r}; add input columns")
        return wanted

    def load(self, data_dir: Path) -> Splits:
        path = self.file()
        header, rows = read_csv(path)
        for column in (self.label, self.split_column):
            if column is not None and column not in header:
                raise BadInput(f"{path} has no column {column!r} (its header: {', '.join(header)}); "
                               f"set data.{'label' if column == self.label else 'split_column'} to one of them")
        features = self.feature_columns(header, str(path))
        x = numeric_columns(rows, header, features, path)
        labels = [row[header.index(self.label)] for row in rows]
        y = numeric_or_text(labels) if self.task == "classification" else numeric_columns(rows, header, [self.label], path)
        if self.split_column is None:
            xs, ys = {"all": x}, {"all": y}
        else:
            part_of = np.array([row[header.index(self.split_column)].strip() for row in rows])
            unknown = sorted(set(part_of) - set(SPLITS))
            if unknown:
                raise BadInput(f"{path}: column {self.split_column!r} holds {unknown[0]!r}; each row's part must be "
                               "train, val or test")
            xs = {part: x[part_of == part] for part in SPLITS}
            ys = {part: y[part_of == part] for part in SPLITS}
        return self.finish(xs, ys, pixels=False, record={"files": {str(path.absolute()): sha256(path)},
                                                          "features": features})


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of a CSV file; `BadInput` for an unreadable file, a missing header
    or a row whose number of cells differs from the header's."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            table = [row for row in csv.reader(f) if row]
    except UnicodeDecodeError:
        raise BadInput(f"{path} is not a UTF-8 text file; save the CSV as UTF-8") from None
    except csv.Error as err:
        raise BadInput(f"{path} is not a readable CSV file ({err})") from None
    if not table:
        raise BadInput(f"{path} is empty; give a header row and one row per example")
    header = [cell.strip() for cell in table[0]]
    if all(_is_number(cell) for cell in header):
        raise BadInput(f"{path} has no header row (its first row is all numbers); add a row naming the columns")
    for line, row in enumerate(table[1:], start=2):
        if len(row) != len(header):
            raise BadInput(f"{path} row {line} has {len(row)} cells but the header has {len(header)}; "
                           "give every row one cell per column")
    if len(table) < 2:
        raise BadInput(f"{path} has a header but no examples; add one row per example")
    return header, table[1:]


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def numeric_columns(rows: list[list[str]], header: list[str], columns: list[str], path) -> np.ndarray:
    """(N, len(columns)) float64 of the named columns; `BadInput` naming the first cell that is not a number."""
    indices = [header.index(c) for c in columns]
    out = np.empty((len(rows), len(columns)), np.float64)
    for r, row in enumerate(rows):
        for k, i in enumerate(indices):
            try:
                out[r, k] = float(row[i])
            except ValueError:
                raise BadInput(f"{path} row {r + 2}, column {header[i]!r}: {row[i]!r} is not a number; "
                               "give numbers in every feature cell") from None
    if not np.isfinite(out).all():
        r, k = np.argwhere(~np.isfinite(out))[0]
        raise BadInput(f"{path} row {r + 2}, column {columns[k]!r} is {rows[r][indices[k]]!r}; give finite numbers")
    return out


def numeric_or_text(labels: list[str]) -> np.ndarray:
    """Labels as integers where every one is a whole number (so 10 sorts after 2), else as text."""
    try:
        return np.array([int(label) for label in labels])
    except ValueError:
        return np.array([label.strip() for label in labels])


# ----- a folder of images ----------------------------------------------------------------

@DATASETS.register("image_folder")
@dataclasses.dataclass
class ImageFolderConfig(FileDataset):
    """Images in one subfolder per class (the subfolder's name is the class's), or in
    train/, val/ and test/ folders that each hold the class subfolders. Every image has
    the same size; grey (1 channel) or colour (3)."""

    summary: ClassVar[str] = "your images: a folder (data.path) with one subfolder of images per class"
    what: ClassVar[str] = "folder of images (one subfolder per class)"
    name: str = "image_folder"
    task: Literal["classification"] = "classification"

    def peek(self) -> DatasetInfo:
        folder = Path(self.path) if self.path else None
        if folder is None or not folder.is_dir():
            return DatasetInfo((1, 1, 1), 0, "classification")
        root = folder / "train" if own_split_folders(folder) else folder
        classes = class_folders(root)
        first = next((f for c in classes for f in image_files(c)), None)
        shape = image_shape(first) if first else None
        return DatasetInfo(shape or (1, 1, 1), len(classes), "classification")

    def load(self, data_dir: Path) -> Splits:
        folder = self.file()
        if not folder.is_dir():
            raise BadInput(f"data.path {folder} is a file; give the folder that holds one subfolder of images per class")
        roots = {part: folder / part for part in SPLITS} if own_split_folders(folder) else {"all": folder}
        names = sorted({c.name for root in roots.values() for c in class_folders(root)})
        if not names:
            raise BadInput(f"{folder} holds no class subfolders; put each class's images in a subfolder named after it")
        xs, ys, checksums, first = {}, {}, {}, None
        for part, root in roots.items():
            images, labels = [], []
            for label, name in enumerate(names):
                for file in image_files(root / name):
                    image = decode_image(file)
                    first = first or (file, image.shape)
                    if image.shape != first[1]:
                        raise BadInput(f"mixed image sizes: {file} is {_describe_shape(image.shape)} but {first[0]} is "
                                       f"{_describe_shape(first[1])}; give every image the same size and colour mode")
                    checksums[str(file.absolute())] = sha256(file)
                    images.append(image)
                    labels.append(label)
            if not images:
                raise BadInput(f"{root} holds no images ({', '.join(IMAGE_SUFFIXES)}) in its class subfolders; add some")
            xs[part], ys[part] = np.stack(images), np.array([names[i] for i in labels])
        return self.finish(xs, ys, pixels=True, record={"files": checksums})


def own_split_folders(folder: Path) -> bool:
    return all((folder / part).is_dir() for part in SPLITS)


def class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.is_dir() else []


def image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if folder.is_dir() else []


def _describe_shape(shape: tuple[int, ...]) -> str:
    height, width, channels = shape
    return f"{height}x{width} {'grey' if channels == 1 else 'colour'}"


def image_shape(path: Path) -> tuple[int, int, int] | None:
    """(height, width, channels) from an image's header, None if unreadable."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.height, image.width, 1 if image.mode in ("1", "L", "LA") else 3
    except (OSError, UnidentifiedImageError):
        return None


def decode_image(path: Path) -> np.ndarray:
    """An image file -> uint8 (height, width, 1) grey or (height, width, 3) colour; an
    alpha channel is dropped where every pixel is opaque. `BadInput` for an unreadable
    file, transparency or an unusual mode (16-bit, float)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            image.load()
            mode = image.mode
            if mode == "P":
                image = image.convert("RGBA")
            elif mode == "1":
                image = image.convert("L")
            if image.mode not in ("L", "LA", "RGB", "RGBA"):
                raise BadInput(f"{path} is a {mode} image; save it as an 8-bit grey or colour image (PNG, JPEG)")
            array = np.asarray(image)
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise BadInput(f"{path} is not a readable image ({err}); replace it or remove it") from None
    if array.ndim == 2:
        return array[..., None]
    if image.mode in ("LA", "RGBA"):
        if (array[..., -1] != 255).any():
            raise BadInput(f"{path} has transparent pixels; flatten it onto a background first")
        array = array[..., :-1]
    return array
