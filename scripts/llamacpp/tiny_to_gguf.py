#!/usr/bin/env python3
"""Writes funion's tiny llama folder (config.json, model.safetensors,
tokenizer.json) as a GGUF file llama.cpp loads, f32, so an independent
implementation can run the very same weights.

usage: tiny_to_gguf.py MODEL_DIR OUT.gguf
"""
import json
import struct
import sys

import gguf
import numpy as np


def read_safetensors(path):
    with open(path, "rb") as f:
        (length,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(length))
        data = f.read()
    tensors = {}
    for name, meta in header.items():
        if name == "__metadata__":
            continue
        assert meta["dtype"] == "F32", meta
        start, end = meta["data_offsets"]
        tensors[name] = np.frombuffer(data[start:end], dtype=np.float32).reshape(meta["shape"])
    return tensors


def permute(w, heads):
    # Hugging Face's rotate-half layout to GGML's interleaved one (what
    # llama.cpp's own converter does for llama q and k projections).
    return w.reshape(heads, 2, w.shape[0] // heads // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main(model_dir, out):
    config = json.load(open(f"{model_dir}/config.json"))
    tok = json.load(open(f"{model_dir}/tokenizer.json"))
    tensors = read_safetensors(f"{model_dir}/model.safetensors")
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    hidden = config["hidden_size"]
    vocab_size = config["vocab_size"]

    w = gguf.GGUFWriter(out, "llama")
    w.add_name("funion-tiny-llama")
    w.add_context_length(config["max_position_embeddings"])
    w.add_embedding_length(hidden)
    w.add_block_count(config["num_hidden_layers"])
    w.add_feed_forward_length(config["intermediate_size"])
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_layer_norm_rms_eps(config["rms_norm_eps"])
    w.add_rope_freq_base(config["rope_theta"])
    w.add_rope_dimension_count(hidden // heads)
    w.add_vocab_size(vocab_size)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)

    vocab = tok["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    special = {a["id"]: a["content"] for a in tok.get("added_tokens", [])}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in special:
            tokens.append(special[i])
            types.append(gguf.TokenType.CONTROL)
        elif i in by_id:
            tokens.append(by_id[i])
            types.append(gguf.TokenType.NORMAL)
        else:
            tokens.append(f"[UNUSED{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok["model"]["merges"]]
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_token_merges(merges)
    w.add_bos_token_id(config["bos_token_id"])
    w.add_eos_token_id(config["eos_token_id"])
    w.add_add_bos_token(False)

    w.add_tensor("token_embd.weight", tensors["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", tensors["model.norm.weight"])
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        w.add_tensor(f"blk.{i}.attn_norm.weight", tensors[f"{p}.input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", permute(tensors[f"{p}.self_attn.q_proj.weight"], heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", permute(tensors[f"{p}.self_attn.k_proj.weight"], kv_heads))
        w.add_tensor(f"blk.{i}.attn_v.weight", tensors[f"{p}.self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", tensors[f"{p}.self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", tensors[f"{p}.post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", tensors[f"{p}.mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", tensors[f"{p}.mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", tensors[f"{p}.mlp.down_proj.weight"])

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
