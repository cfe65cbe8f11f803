"""The official OpenAI Python SDK against `funion proxy`.

Run by tests/openai.rs with OPENAI_BASE_URL pointing at a proxy over a
--fast devnet whose compute couriers serve SmolLM2-135M-Instruct and
all-MiniLM-L6-v2. Every check is an assert; the script exits non-zero on
the first that fails. Lines starting with TIMING carry the measured time
from `create` to the answer, beside what the network spent on the job.
"""

import base64
import concurrent.futures
import math
import os
import struct
import sys
import time

import openai

CHAT = os.environ["FUNION_CHAT_MODEL"]
EMBED = os.environ["FUNION_EMBED_MODEL"]

client = openai.OpenAI(
    base_url=os.environ["OPENAI_BASE_URL"], api_key="not-needed", timeout=600
)


def timing(what, started, raw):
    """Prints the time from create to answer beside the job's own figures."""
    took = time.monotonic() - started
    extra = getattr(raw, "model_extra", None) or {}
    f = extra.get("funion") or {}
    print(
        f"TIMING {what}: create->answer {took:.2f} s, job {f.get('seconds')} s, "
        f"bucket {f.get('bucket_s')} s, planned compute {f.get('planned_compute_s')} s, "
        f"tickets {f.get('tickets')}, overflow retries {f.get('overflow_retries')}",
        flush=True,
    )


# 1. The models the network document lists.
listed = client.models.list().data
ids = [m.id for m in listed]
for m in listed:
    print(m.id, (m.model_extra or {}).get("timings", [])[:3], flush=True)
print("models:", ids, flush=True)
assert CHAT in ids and EMBED in ids, ids
assert client.models.retrieve(CHAT).id == CHAT

# 2. A short factual question, greedy.
question = [{"role": "user", "content": "What is the capital of France?"}]
started = time.monotonic()
answer = client.chat.completions.create(
    model=CHAT, messages=question, temperature=0, max_tokens=12
)
timing("chat", started, answer)
text = answer.choices[0].message.content
print("chat:", repr(text), flush=True)
assert "Paris" in text, text
assert answer.object == "chat.completion"
assert answer.choices[0].finish_reason in ("stop", "length")
assert answer.usage.completion_tokens > 0
assert answer.usage.total_tokens == answer.usage.prompt_tokens + answer.usage.completion_tokens

# 3. Sampled with a seed, then the same streamed: the chunks join into the
# same text.
story = [{"role": "user", "content": "Name a colour."}]
kwargs = dict(model=CHAT, messages=story, temperature=0.7, max_tokens=8, seed=1234)
plain = client.chat.completions.create(**kwargs).choices[0].message.content
started = time.monotonic()
pieces, finish, usage = [], None, None
for chunk in client.chat.completions.create(
    stream=True, stream_options={"include_usage": True}, **kwargs
):
    assert chunk.object == "chat.completion.chunk"
    if chunk.usage is not None:
        usage = chunk.usage
    for choice in chunk.choices:
        if choice.delta.content:
            pieces.append(choice.delta.content)
        if choice.finish_reason:
            finish = choice.finish_reason
print(f"stream: {len(pieces)} chunks {''.join(pieces)!r}, plain {plain!r}", flush=True)
print(f"TIMING stream: create->last chunk {time.monotonic() - started:.2f} s", flush=True)
assert "".join(pieces) == plain, (pieces, plain)
assert len(pieces) > 1, pieces
assert finish in ("stop", "length")
assert usage is not None and usage.completion_tokens > 0

# 4. A plain completion.
started = time.monotonic()
completion = client.completions.create(
    model=CHAT, prompt="The capital of France is", temperature=0, max_tokens=6
)
timing("completion", started, completion)
print("completion:", repr(completion.choices[0].text), flush=True)
assert completion.object == "text_completion"
assert completion.choices[0].text.strip(), completion
assert completion.usage.completion_tokens > 0

# 5. Embeddings: the SDK asks for base64 unless told otherwise; related
# sentences come out closer than unrelated ones; float gives the same vector.
sentences = [
    "A cat is sleeping on the sofa.",
    "A kitten naps on the couch.",
    "The central bank raised interest rates.",
]
started = time.monotonic()
embedded = client.embeddings.create(model=EMBED, input=sentences)
timing("embeddings", started, embedded)
vectors = [item.embedding for item in sorted(embedded.data, key=lambda d: d.index)]
assert len(vectors) == 3 and all(len(v) == len(vectors[0]) for v in vectors)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    return dot / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


related, unrelated = cosine(vectors[0], vectors[1]), cosine(vectors[0], vectors[2])
print(f"cosine: related {related:.3f}, unrelated {unrelated:.3f}", flush=True)
assert related > unrelated + 0.2, (related, unrelated)
assert related > cosine(vectors[1], vectors[2])
floats = client.embeddings.create(model=EMBED, input=sentences[0], encoding_format="float")
assert max(abs(x - y) for x, y in zip(floats.data[0].embedding, vectors[0])) < 1e-6
raw = client.embeddings.with_raw_response.create(
    model=EMBED, input=sentences[0], encoding_format="base64"
)
packed = raw.http_response.json()["data"][0]["embedding"]
decoded = struct.unpack(f"<{len(vectors[0])}f", base64.b64decode(packed))
assert max(abs(x - y) for x, y in zip(decoded, vectors[0])) < 1e-6

# 6. Errors in OpenAI's shape, before anything is paid.
try:
    client.chat.completions.create(model="no-such-model", messages=question)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as error:
    assert error.status_code == 404
    body = error.body if "message" in error.body else error.body["error"]
    assert body["code"] == "model_not_found" and body["param"] == "model", body
    print("unknown model:", body["message"], flush=True)
try:
    client.chat.completions.create(model=CHAT, messages=question, temperature=0.5)
    raise AssertionError("a temperature off the presets was accepted")
except openai.BadRequestError as error:
    assert error.status_code == 400 and error.param == "temperature", error.body
try:
    client.chat.completions.create(model=CHAT, messages=question, max_tokens=100000)
    raise AssertionError("max_tokens past every output class was accepted")
except openai.BadRequestError as error:
    assert error.status_code == 400 and error.param == "max_tokens", error.body

# 7. Two requests at once from one program: two concurrent jobs.
def ask(city):
    messages = [{"role": "user", "content": f"In which country is {city}?"}]
    started = time.monotonic()
    reply = client.chat.completions.create(
        model=CHAT, messages=messages, temperature=0, max_tokens=8
    )
    return started, time.monotonic(), reply


started = time.monotonic()
with concurrent.futures.ThreadPoolExecutor(max_workers=2) as pool:
    both = list(pool.map(ask, ["Rome", "Madrid"]))
elapsed = time.monotonic() - started
for city, (_, _, reply) in zip(["Rome", "Madrid"], both):
    print(f"concurrent {city}: {reply.choices[0].message.content!r}", flush=True)
    assert reply.choices[0].message.content.strip()
assert both[0][2].id != both[1][2].id
alone = sum(end - begin for begin, end, _ in both)
print(f"TIMING concurrent: two requests in {elapsed:.2f} s, {alone:.2f} s if one after the other", flush=True)
print("openai sdk: all checks passed", flush=True)
