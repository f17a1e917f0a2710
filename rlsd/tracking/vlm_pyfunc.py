"""A vision-language policy as an MLflow pyfunc, logged as models from code by
:mod:`rlsd.tracking.logged_model` (MLflow runs this file when it loads the model; nothing in
rlsd imports it).

Requests are OpenAI-style chat: ``messages`` whose ``content`` is a string or a list of parts,
``{"type": "text", "text": ...}`` and ``{"type": "image_url", "image_url": {"url":
"data:image/png;base64,..."}}`` (a bare base64 string works too; no URL is ever fetched), plus
``max_tokens`` and ``temperature`` (0 or absent: greedy). Answers are ``chat.completion``
documents, shaped like those of the text policies' ``llm/v1/chat`` task.

Why a pyfunc: MLflow's transformers flavor saves a model with a processor without a pyfunc
flavor (and has no image-text-to-text pipeline support), so ``mlflow.pyfunc.load_model`` and
``mlflow models serve`` could not use it. The weights are the model's ``model`` artifact, the
trainer's ``save_pretrained`` folder with its processor. The processor is built the way rlsd
builds it: image-only where torchvision is missing, by :func:`rlsd.models.vlm.load_processor`,
whose package is shipped with the model as code.
"""

from __future__ import annotations

import base64
import io
import time
import uuid
from typing import Any

import pandas as pd
from mlflow.models import set_model
from mlflow.pyfunc import PythonModel


def _image(part: dict[str, Any]) -> Any:
    from PIL import Image

    ref = part.get("image_url", part.get("image"))
    url = ref.get("url") if isinstance(ref, dict) else ref
    if not isinstance(url, str) or not url:
        raise ValueError(f"image part without an image: {part.get('type')!r}")
    if url.startswith(("http://", "https://")):
        raise ValueError("image URLs are not fetched: send the image inline as a data: URL")
    data = url.split(",", 1)[1] if url.startswith("data:") else url
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def _messages(messages: Any) -> tuple[list[dict[str, Any]], list[Any]]:
    """Chat messages in the processor template's terms (``{"type": "image"}`` placeholders)
    and the decoded images, in order."""
    out, images = [], []
    for m in list(messages):
        content = m["content"]
        if content is None or isinstance(content, str):
            out.append({"role": m["role"], "content": content or ""})
            continue
        parts = []
        for part in list(content):
            kind = part.get("type")
            if kind == "text":
                parts.append({"type": "text", "text": part.get("text", "")})
            elif kind in ("image_url", "image"):
                images.append(_image(part))
                parts.append({"type": "image"})
            else:
                raise ValueError(f"unsupported content part type {kind!r}")
        out.append({"role": m["role"], "content": parts})
    return out, images


def _requests(model_input: Any) -> list[dict[str, Any]]:
    """One request per row (a DataFrame after signature enforcement, or a raw dict / list)."""
    if isinstance(model_input, pd.DataFrame):
        rows = model_input.to_dict(orient="records")
    elif isinstance(model_input, dict):
        rows = [model_input]
    else:
        rows = list(model_input)
    return [{k: (None if _is_nan(v) else v) for k, v in r.items()} for r in rows]


def _is_nan(v: Any) -> bool:
    return isinstance(v, float) and v != v


class VisionChatModel(PythonModel):
    """Chat completions from a vision-language policy (see the module docstring)."""

    def load_context(self, context: Any) -> None:
        import torch
        from transformers import AutoModelForImageTextToText

        from rlsd.models.vlm import load_processor, vlm_family

        path = context.artifacts["model"]
        family = vlm_family(path)
        if family is None:
            raise ValueError(f"{path}: not a supported vision-language model")
        self.model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch.float32)
        self.model.eval()
        self.processor = load_processor(path, family)
        self.tokenizer = self.processor.tokenizer
        self.template = self.processor.chat_template or self.tokenizer.chat_template
        config = dict(context.model_config or {})
        self.max_new_tokens = int(config.get("max_new_tokens", 256))
        self.name = str(config.get("model_name", "rlsd-policy"))
        eos = self.model.generation_config.eos_token_id
        self.eos = set(eos if isinstance(eos, list) else [eos] if eos is not None else [])

    # the one hint MLflow infers no signature from (the logged signature is explicit; with it
    # MLflow hands over one DataFrame row per request)
    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        return [self._complete(r, params or {}) for r in _requests(model_input)]

    def _complete(self, request: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
        import torch

        messages, images = _messages(request["messages"])
        max_new = int(request.get("max_tokens") or params.get("max_tokens") or self.max_new_tokens)
        temperature = float(request.get("temperature") or params.get("temperature") or 0.0)
        text = self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, add_generation_prompt=True, tokenize=False
        )
        if images:
            enc = self.processor(
                text=[text], images=[images], return_tensors="pt", add_special_tokens=False
            )
        else:
            enc = self.tokenizer([text], return_tensors="pt", add_special_tokens=False)
        sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {}
        with torch.no_grad():
            out = self.model.generate(
                **enc, max_new_tokens=max_new, pad_token_id=self.tokenizer.pad_token_id,
                **({"do_sample": False} | sampling),
            )  # fmt: skip
        prompt_len = int(enc["input_ids"].shape[1])
        new = out[0, prompt_len:].tolist()
        stopped = any(t in self.eos for t in new)
        return {
            "id": f"chatcmpl-{uuid.uuid4().hex}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.name,
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": self.tokenizer.decode(new, skip_special_tokens=True),
                    },
                    "finish_reason": "stop" if stopped else "length",
                }
            ],
            "usage": {
                "prompt_tokens": prompt_len,
                "completion_tokens": len(new),
                "total_tokens": prompt_len + len(new),
            },
        }


set_model(VisionChatModel())
