"""The embedder's two backends: torch, and ONNX Runtime over an fp32 ONNX export of the
same weights, made once into the state dir and checked against its manifest (sha256) on
every later start. sentence-transformers does the rest either way (tokenising, sorting
by length, pooling, normalising), so the two give the same vectors (to cosine 0.9999).

sentence-transformers' own backend="onnx" needs optimum-onnx, whose every release pins
transformers<4.58 (this project runs transformers 5), so the export is torch.onnx's and
the session plain onnxruntime's, put where optimum's model would sit.

Only fp32: an int8 (quantised) export gives other vectors, so it would be a model of its
own, with its own pin and identity, never a backend of this one."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from ragplane.errors import ConfigError
from ragplane.models import ResolvedModel, build_once, verify_converted

# torch, onnxruntime and transformers are imported where they are used: the embedder's
# settings import this module.
BACKEND_VARIABLE = "RAGPLANE_EMBEDDER_BACKEND"
AUTO, TORCH, ONNX = "auto", "torch", "onnx"
BACKENDS = (AUTO, TORCH, ONNX)
ONNX_FILE = "model.onnx"
ONNX_WEIGHTS = "*.onnx"
OPSET = 17

# What "auto" runs on a CPU: torch, measured faster in one process on a quiet machine
# (2026-12-02, 2 cores, 512 sample-corpus paragraphs of bench.embedder.corpus_texts,
# 3 alternating runs, docs/performance.md): texts/s torch vs onnx,
# passes of 8: 84.5 (67.3-84.9) vs 75.2 (73.2-77.8); of 32: 87.4 (82.9-88.8) vs 76.8
# (76.3-78.8). An earlier run on a loaded machine had ONNX ahead; quiet, torch's oneDNN
# kernels win by about 12 %. ONNX stays a choice (RAGPLANE_EMBEDDER_BACKEND=onnx) for
# CPUs where it measures faster.
CPU_BACKEND = TORCH


def backend_for(device: str, setting: str) -> str:
    """The backend to run on device ("cpu", "cuda:0") for a setting of BACKENDS: a GPU
    always runs torch (onnxruntime here is the CPU build)."""
    if setting not in BACKENDS:
        raise ConfigError(f"{BACKEND_VARIABLE}={setting!r} must be one of {', '.join(BACKENDS)}")
    if device != "cpu":
        if setting == ONNX:
            raise ConfigError(
                f"{BACKEND_VARIABLE}=onnx runs on a CPU only, but the device is {device}; "
                "use torch or auto, or RAGPLANE_EMBEDDER_DEVICE=cpu"
            )
        return TORCH
    return CPU_BACKEND if setting == AUTO else setting


def export_folder(model: ResolvedModel, state_dir: Path) -> Path:
    """Where the export of these weights lives: named by the weights it was made from."""
    name = model.id.rsplit("/", 1)[-1].lower()
    return state_dir / "models" / f"{name}-{model.weights_sha256[:12]}-onnx-fp32"


def exported(model: ResolvedModel, state_dir: Path) -> Path:
    """The model's ONNX file: exported once from the verified folder (offline), checked
    against its manifest and against the weights it was made from on every start."""
    target = export_folder(model, state_dir)
    build_once(
        target,
        lambda tmp: _export(model, tmp),
        f"exporting {model.id} to ONNX (fp32)",
        weights=ONNX_WEIGHTS,
    )
    verify_converted(target, weights=ONNX_WEIGHTS, source_sha256=model.weights_sha256)
    return target / ONNX_FILE


def _export(model: ResolvedModel, out: Path) -> dict[str, object]:
    import torch
    from transformers import AutoModel, AutoTokenizer

    class LastHiddenState(torch.nn.Module):
        """The transformer with plain tensors in (by the tokenizer's names) and out, as
        the exporter traces it."""

        def __init__(self, model: torch.nn.Module, names: list[str]) -> None:
            super().__init__()
            self.model = model
            self.names = names

        def forward(self, *tensors: torch.Tensor) -> torch.Tensor:
            return self.model(**dict(zip(self.names, tensors, strict=True))).last_hidden_state

    folder = str(model.path)
    # Eager attention: the exporter traces it into plain ONNX operators for any shape.
    source = AutoModel.from_pretrained(
        folder, local_files_only=True, attn_implementation="eager", dtype=torch.float32
    ).eval()
    # Two texts of different lengths, so that the traced graph is the padded case.
    sample = AutoTokenizer.from_pretrained(folder, local_files_only=True)(
        ["an example", "a longer example text to trace with"], padding=True, return_tensors="pt"
    )
    names = list(sample.keys())  # input_ids, token_type_ids, attention_mask for BERT
    with torch.no_grad(), warnings.catch_warnings():
        # The tracer warns of Python conditions on shapes in the attention mask code; in
        # an encoder they hold for every shape (the mask is as long as the sequence).
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(
            LastHiddenState(source, names),
            tuple(sample[name] for name in names),
            str(out / ONNX_FILE),
            dynamo=False,  # the TorchScript exporter: no onnxscript needed
            input_names=names,
            output_names=["last_hidden_state"],
            dynamic_axes={n: {0: "batch", 1: "sequence"} for n in (*names, "last_hidden_state")},
            opset_version=OPSET,
        )
    return {
        "model_id": model.id,
        "revision": model.revision,
        "format": "onnx",
        "dtype": "float32",
        "opset": OPSET,
        "exporter": f"torch {torch.__version__}",
        "source_weights_sha256": model.weights_sha256,
    }


def use_onnx(model: Any, onnx_file: Path, threads: int = 0) -> None:
    """Puts an ONNX Runtime session where the SentenceTransformer's first module keeps
    its Hugging Face model (where optimum's would sit): the same inputs in,
    last_hidden_state out; the torch weights are released. `threads`: per run (0, ONNX
    Runtime's default: every core)."""
    import onnxruntime  # type: ignore[import-untyped]
    import torch

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    session = onnxruntime.InferenceSession(
        str(onnx_file), sess_options=options, providers=["CPUExecutionProvider"]
    )
    inputs = [i.name for i in session.get_inputs()]

    class OnnxTransformer(torch.nn.Module):
        def __init__(self, config: Any) -> None:
            super().__init__()
            self.config = config  # sentence-transformers reads it (dimension, outputs)

        def forward(self, **features: Any) -> dict[str, torch.Tensor]:
            feeds = {name: features[name].numpy() for name in inputs}
            (hidden,) = session.run(["last_hidden_state"], feeds)
            return {"last_hidden_state": torch.from_numpy(hidden)}

    transformer = model[0]
    transformer.model = OnnxTransformer(transformer.model.config)
