"""A trained run on new inputs, behind `dlcli predict` and `dlcli.load_run`.

`TrainedRun` restores a run's model from its folder alone (config.yaml, a checkpoint,
preprocessing.json; vocab.json for a language model) and prepares raw inputs exactly
as the training data was prepared: 8-bit images divided by 255, then the run's scaling
(the training split's mean and deviation, a binarisation threshold, ...). Its outputs
come from the task's own evaluation forward pass (`Task.evaluation_outputs`), in
batches of the run's `training.eval_batch_size`, so predicting a split reproduces what
`dlcli eval` measures on it.

What a run predicts: a classifier the most likely class and every class's probability
(the softmax of its outputs); a regressor its values; a character language model the
next character after each prompt and every character's probability (a continuation is
`dlcli sample`). Inputs (`read_inputs`): an image file or a folder of images, a .npy or
.npz array, a CSV file of feature columns, or for a language model a UTF-8 text file,
one prompt per line.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import jax
import numpy as np
from flax import nnx

from dlcli.config import ExperimentConfig
from dlcli.data import apply_scaling
from dlcli.data.files import IMAGE_SUFFIXES, decode_image, image_files, numeric_columns, read_csv
from dlcli.data.text import encode
from dlcli.errors import BadInput
from dlcli.generate import next_token_logits
from dlcli.runs import RunDir
from dlcli.tasks import make_task

PREDICTING = ("classification", "regression")


@dataclasses.dataclass
class Predictions:
    """What a run predicts for N inputs. `kind`: classification, regression or
    next_character; `inputs` names each input (a file name, a row number, a prompt);
    `classes` the name of each class (characters, for a language model); `predicted`
    (N,) class indices or (N, k) regression values; `probabilities` (N, K) or None."""

    kind: str
    inputs: list[str]
    classes: list[str] | None
    predicted: np.ndarray
    probabilities: np.ndarray | None = None

    @property
    def labels(self) -> list[str]:
        """The predicted class of each input by name (classification, next character)."""
        return [self.classes[i] for i in self.predicted]

    def records(self) -> list[dict]:
        """One JSON-ready dict per input: input, predicted (a class name or the values),
        probabilities ({class: p})."""
        if self.probabilities is None:
            return [{"input": name, "predicted": [float(v) for v in values]}
                    for name, values in zip(self.inputs, self.predicted)]
        return [{"input": name, "predicted": label, "probabilities": dict(zip(self.classes, map(float, probs)))}
                for name, label, probs in zip(self.inputs, self.labels, self.probabilities)]

    def table(self) -> tuple[list[str], list[list]]:
        """(header, rows) for a CSV file: input, predicted, p_<class>... (regression:
        input, value_0 ...; a single value is named `value`)."""
        if self.probabilities is None:
            k = self.predicted.shape[1]
            header = ["input", *(["value"] if k == 1 else [f"value_{i}" for i in range(k)])]
            return header, [[name, *map(float, values)] for name, values in zip(self.inputs, self.predicted)]
        header = ["input", "predicted", *(f"p_{_printable(c)}" for c in self.classes)]
        return header, [[name, _printable(label), *map(float, probs)]
                        for name, label, probs in zip(self.inputs, self.labels, self.probabilities)]


def _printable(text: str) -> str:
    """A class name fit for a CSV cell: a character such as a newline escaped ("\\n")."""
    return text if text.isprintable() else repr(text)[1:-1]


class TrainedRun:
    """A run folder's model at `checkpoint` (best, latest or a step), ready to predict:
    `.model` (Flax NNX, evaluation mode), `.config`, `.step`, `.preprocessing`."""

    def __init__(self, run_dir: str | Path, checkpoint: str = "best"):
        self.run = RunDir(run_dir)
        cfg = self.run.trained_config()
        info = cfg.info
        self.language_model = info.autoregressive and self.run.vocab_file.is_file()  # a character corpus
        if not self.language_model and (cfg.task_kind not in PREDICTING or info.sequence):
            raise BadInput(f"{self.run.path} trained {cfg.model.name!r} for {cfg.task_kind} on {cfg.data.name!r}; "
                           "predict takes classifiers and regressors of fixed-size inputs and character language "
                           "models (dlcli sample: sequence-to-sequence and generative runs; dlcli embed: autoencoders)")
        self.config: ExperimentConfig = cfg
        self.vocab = self.run.vocab() if self.language_model else None
        self.preprocessing = {} if self.language_model else self.run.preprocessing()
        self.model, self.step = self.run.restore_model(str(checkpoint), cfg)
        self.info = self.run.info(cfg)
        self.task = make_task(cfg)
        self._forward = None

    @property
    def kind(self) -> str:
        return "next_character" if self.language_model else self.config.task_kind

    @property
    def classes(self) -> list[str] | None:
        """Each class index's name: the dataset's (a folder, a label column) or the index."""
        if self.language_model:
            return list(self.vocab)
        if self.kind != "classification":
            return None
        return self.preprocessing.get("classes") or [str(i) for i in range(self.info.n_outputs)]

    # ----- inputs ---------------------------------------------------------------------------
    def prepare(self, x, where: str = "the input") -> np.ndarray:
        """Raw inputs (N, *input_shape), or one example (*input_shape), or rows of
        prod(input_shape) values -> float32 (N, *input_shape) as the model saw its training
        data. Pixel datasets take values in [0, 1] or uint8 0..255; `BadInput` for any other
        shape, range or type, naming what the model takes."""
        x = np.asarray(x)
        shape = tuple(self.info.input_shape)
        takes = f"(N, {', '.join(map(str, shape))}) or one example {shape}"
        if x.dtype.kind not in "biuf":
            raise BadInput(f"{where} holds {x.dtype} values; the model takes numbers of shape {takes}")
        if x.shape == shape:
            x = x[None]
        elif x.ndim == 2 and x.shape[1] == math.prod(shape) and len(shape) > 1:
            x = x.reshape(len(x), *shape)  # flattened rows (a CSV of pixels)
        elif x.shape[1:] + (1,) == shape:
            x = x[..., None]  # grey images without their channel axis
        if x.shape[1:] != shape:
            raise BadInput(f"{where} has shape {x.shape} but the model takes {takes}")
        if len(x) == 0:
            raise BadInput(f"{where} holds no examples; give at least one")
        if self.preprocessing.get("inputs") == "pixels":
            if x.dtype == np.uint8:
                x = x.astype(np.float32) / 255.0
            elif x.dtype.kind in "biu" or x.min() < 0 or x.max() > 1:
                raise BadInput(f"{where} holds values from {x.min():g} to {x.max():g}, but the model takes pixel values "
                               "in [0, 1] (or uint8 0..255, divided by 255); scale them first")
        x = x.astype(np.float32)
        if not np.isfinite(x).all():
            raise BadInput(f"{where} holds NaN or infinite values; give finite numbers")
        return apply_scaling(x, self.preprocessing.get("scaling", {}))

    def read_inputs(self, path: str | Path) -> tuple[list[str], object]:
        """(a name for each input, the raw inputs) of a file or folder: images as uint8,
        arrays as stored, CSV feature columns as float64, text as its lines."""
        path = Path(path)
        if not path.exists():
            raise BadInput(f"input {path} does not exist; give an image, a folder of images, a .npy, .npz, .csv "
                           "(or, for a language model, .txt) file")
        if self.language_model:
            return self._read_prompts(path)
        if path.is_dir():
            files = image_files(path)
            if not files:
                raise BadInput(f"folder {path} holds no images ({', '.join(IMAGE_SUFFIXES)}); give a folder of images")
            return [f.name for f in files], np.stack([self.image(f) for f in files])
        suffix = path.suffix.lower()
        if suffix in IMAGE_SUFFIXES:
            return [path.name], self.image(path)[None]
        if suffix in (".npy", ".npz"):
            x = self._read_array(path)
            return [str(i) for i in range(len(x) if x.shape != self.info.input_shape else 1)], x
        if suffix == ".csv":
            header, rows = read_csv(path)
            columns = self.preprocessing.get("features") or header
            missing = [c for c in columns if c not in header]
            if missing:
                raise BadInput(f"{path} has no column {missing[0]!r}; give the feature columns the run trained on "
                               f"({', '.join(columns)}) by name in the header")
            x = numeric_columns(rows, header, columns, path)
            return [str(i) for i in range(len(x))], x
        raise BadInput(f"input {path} is not an image ({', '.join(IMAGE_SUFFIXES)}), .npy, .npz or .csv file; "
                       "give one of those, or a folder of images")

    def image(self, path: Path) -> np.ndarray:
        """An image file as uint8 (height, width, channels) of the model's size: a grey
        image stored as colour (equal channels) becomes grey, a grey one becomes colour by
        repetition, an integer multiple of the size is averaged down in blocks; `BadInput`
        for anything else (the conversion would be a guess)."""
        if self.preprocessing.get("inputs") != "pixels":
            raise BadInput(f"{path} is an image, but {self.run.path} was trained on feature vectors of shape "
                           f"{self.info.input_shape}; give a .npy, .npz or .csv file")
        height, width, channels = self.info.input_shape
        image = decode_image(path)
        if image.shape[2] != channels:
            if channels == 1 and (image == image[..., :1]).all():
                image = image[..., :1]
            elif channels == 3:
                image = np.repeat(image, 3, axis=2)
            else:
                raise BadInput(f"{path} is a colour image but the model takes grey images ({height}x{width}, 1 "
                               "channel); convert it to greyscale first")
        h, w, _ = image.shape
        if (h, w) != (height, width):
            factor = h // height
            if h % height or w % width or w // width != factor:
                raise BadInput(f"{path} is {h}x{w} pixels but the model takes {height}x{width} (or a whole multiple "
                               "of it); resize it first")
            blocks = image.reshape(height, factor, width, factor, image.shape[2]).astype(np.float64)
            image = np.round(blocks.mean(axis=(1, 3))).astype(np.uint8)
        return image

    def _read_array(self, path: Path) -> np.ndarray:
        try:
            loaded = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError) as err:
            raise BadInput(f"{path} is not a readable NumPy file ({err}); write it with np.save or np.savez") from None
        if isinstance(loaded, np.ndarray):
            return loaded
        with loaded:
            keys = loaded.files
            key = getattr(self.config.data, "x_key", "x")
            if key not in keys and len(keys) != 1:
                raise BadInput(f"{path} holds arrays {', '.join(keys)}; name the inputs {key!r} (or keep one array)")
            return loaded[key if key in keys else keys[0]]

    def _read_prompts(self, path: Path) -> tuple[list[str], list[str]]:
        if path.is_dir() or path.suffix.lower() != ".txt":
            raise BadInput(f"{self.run.path} is a language model: give a UTF-8 .txt file with one prompt per line, "
                           f"not {path}")
        try:
            lines = [line for line in path.read_text(encoding="utf-8").splitlines() if line]
        except UnicodeDecodeError:
            raise BadInput(f"{path} is not UTF-8 text; save it as UTF-8") from None
        if not lines:
            raise BadInput(f"{path} holds no prompt; give one per line")
        return lines, lines

    # ----- predictions --------------------------------------------------------------------
    def predict(self, x, names: list[str] | None = None) -> Predictions:
        """Predictions for raw inputs `x` (an array, see `prepare`; for a language model a
        prompt or a list of prompts) or a path (see `read_inputs`)."""
        if isinstance(x, (str, Path)) and not (self.language_model and isinstance(x, str)):
            names, x = self.read_inputs(x)
        if self.language_model:
            return self._next_characters([x] if isinstance(x, str) else list(x))
        prepared = self.prepare(x)
        names = names or [str(i) for i in range(len(prepared))]
        outputs = self.outputs(prepared)
        if self.kind == "regression":
            return Predictions("regression", names, None, outputs)
        probabilities = np.asarray(jax.nn.softmax(outputs, axis=-1))
        return Predictions("classification", names, self.classes, outputs.argmax(-1), probabilities)

    def outputs(self, prepared: np.ndarray) -> np.ndarray:
        """(N, *input_shape) prepared inputs -> (N, K) float32 model outputs, by the
        task's evaluation forward pass in zero-padded batches of `eval_batch_size`."""
        if self._forward is None:
            graphdef, state = nnx.split(self.model)

            @jax.jit
            def forward(state, x, index):
                return self.task.evaluation_outputs(nnx.merge(graphdef, state), x, index)

            self._forward = lambda x, index: forward(state, x, index)
        n = len(prepared)
        batch = min(self.config.training.eval_batch_size, n)
        pad = -n % batch
        padded = np.concatenate([prepared, np.zeros((pad, *prepared.shape[1:]), prepared.dtype)]) if pad else prepared
        index = np.arange(len(padded), dtype=np.int32)
        parts = [np.asarray(self._forward(padded[i: i + batch], index[i: i + batch]))
                 for i in range(0, len(padded), batch)]
        return np.concatenate(parts)[:n]

    def _next_characters(self, prompts: list[str]) -> Predictions:
        """Each prompt -> the probability of every character coming next."""
        context = getattr(self.config.model, "context", None)
        probabilities = []
        for prompt in prompts:
            if not prompt:
                raise BadInput("a prompt is empty; give at least one character")
            ids = encode(prompt, self.vocab)
            if context is not None and len(ids) >= context:
                raise BadInput(f"a prompt has {len(ids)} characters but the model's context is {context}; "
                               f"give at most {context - 1}")
            probabilities.append(np.asarray(jax.nn.softmax(next_token_logits(self.model, ids))))
        probabilities = np.stack(probabilities)
        return Predictions("next_character", prompts, self.classes, probabilities.argmax(-1), probabilities)


def predict_run(run_dir: Path, source: Path, checkpoint: str = "best") -> dict:
    """`dlcli predict`: the run's predictions for the inputs in `source`, as one dict
    (run_dir, checkpoint, kind, classes, predictions, and the `Predictions` itself)."""
    trained = TrainedRun(run_dir, checkpoint)
    predictions = trained.predict(Path(source))
    return {"run_dir": str(trained.run.path), "checkpoint": trained.step, "kind": predictions.kind,
            "classes": predictions.classes, "predictions": predictions}
