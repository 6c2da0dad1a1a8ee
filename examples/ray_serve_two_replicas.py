"""Two leapdecode replicas behind Ray Serve on this machine, and a few concurrent requests through the
official openai client, each printed with the replica that answered it.

    pip install -e '.[ray]'
    HF_HUB_OFFLINE=1 python examples/ray_serve_two_replicas.py

The same server from the command line: leapdecode serve-replicas --replicas 2 --port 8000
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import openai

from leapdecode.server import ServerConfig
from leapdecode.server.replicas import REPLICA_HEADER, ReplicaConfig, deploy, shutdown

MODEL = "smollm2-135m"
PROMPTS = ["What is the capital of France?", "List five fruits, one per line.", "Explain recursion in one line.",
           "Write a haiku about the sea.", "What is 17 * 3?", "Name three prime numbers."]


def ask(client: openai.OpenAI, prompt: str) -> tuple[str, str]:
    raw = client.chat.completions.with_raw_response.create(
        model=MODEL, messages=[{"role": "user", "content": prompt}], max_tokens=48, temperature=0)
    return raw.headers[REPLICA_HEADER], raw.parse().choices[0].message.content


def main() -> None:
    url = deploy(ReplicaConfig(ServerConfig(MODEL, method="suffix"), replicas=2), "127.0.0.1", 8000)
    try:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused")
        with ThreadPoolExecutor(len(PROMPTS)) as pool:  # concurrent, so both replicas get work at once
            for prompt, (replica, text) in zip(PROMPTS, pool.map(lambda p: ask(client, p), PROMPTS)):
                print(f"[{replica}] {prompt}\n    {text!r}")
        stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": PROMPTS[0]}],
                                                max_tokens=48, temperature=0, stream=True)
        print("streamed:", "".join(c.choices[0].delta.content or "" for c in stream if c.choices))
    finally:
        shutdown()


if __name__ == "__main__":
    main()
