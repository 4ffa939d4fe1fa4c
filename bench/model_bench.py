#!/usr/bin/env python3
"""Drives Keyplane's local model and llama.cpp's servers with the same streaming load.

Stdlib only. Called by bench/model.sh, which starts the servers; this script only talks
HTTP to them and prints a markdown table.

Every request is streamed, greedy (temperature 0), with the same messages and the same
`max tokens`. The system message starts with a fresh nonce per request so that no server
can answer from a cached prompt prefix (llama-server is also told `cache_prompt: false`);
every server therefore prefills the whole prompt each time.

Per request: prompt tokens, time to the first streamed text (TTFT), output tokens, and
generation time (first text to last text). Per cell (prompt x concurrency x server):
- prompt tok/s = sum of prompt tokens / the slowest TTFT of the concurrent requests
  (every prompt has been prefilled by then);
- generation tok/s = sum over the concurrent requests of (output tokens - 1) / generation
  time, i.e. the aggregate decoding rate while they run side by side.
Servers are measured in turn within each round (alternating, so that noise from other work
on the machine hits them alike); the best round of each cell is reported.

Side by side (`--side-by-side-rounds N`, with both servers' process ids): Keyplane and
llama-server each get one CPU of their own and every cell is sent to both at the same
moment, so whatever slows the machine during a cell slows both alike; between rounds the
two swap CPUs (`taskset -a -p`), so neither keeps the better CPU. Per cell the ratio is the
geometric mean over the rounds of Keyplane's figure over llama-server's in the same round.
On a machine whose speed moves by 10-20% from one minute to the next, this paired ratio
is the steady one; the alternating rounds above give each server's figures alone.
"""

import argparse
import http.client
import json
import math
import os
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid

SHORT_PROMPT = "Write a very long and detailed essay about the history of the Roman Empire."

LONG_TEXT = (
    "The printing press changed how knowledge moved through Europe. Before Johannes "
    "Gutenberg built his press in Mainz around 1440, books were copied by hand, mostly in "
    "monasteries, and a single Bible could take a scribe more than a year. Gutenberg "
    "combined several existing ideas: the screw press used for wine and olive oil, "
    "oil-based inks that stuck to metal, and above all movable type cast from an alloy of "
    "lead, tin and antimony in a hand mould that produced letters of exactly the same "
    "height. His workshop printed about one hundred and eighty copies of the Bible in the "
    "early 1450s, and within fifty years presses were running in more than two hundred "
    "and fifty towns. Venice became the capital of the new trade: Aldus Manutius printed "
    "small, cheap editions of Greek and Latin classics in italic type that scholars could "
    "carry in a pocket. Prices fell, literacy rose, and vernacular languages gained "
    "standard spellings because printers wanted one form that sold everywhere. The "
    "Reformation spread on pamphlets: Martin Luther's writings were printed in hundreds of "
    "thousands of copies in a few years, far faster than the Church could answer them. "
    "Scientists shared exact diagrams and tables, so that an error could be found and "
    "corrected by readers in other countries instead of being copied forever. Newspapers "
    "appeared in the early seventeenth century in Strasbourg and Antwerp, and governments "
    "soon learned to license, tax and censor them. Some historians argue that the press "
    "did not cause these changes alone, since paper mills, trade routes, universities and "
    "growing cities all had to exist first; others answer that without cheap identical "
    "copies none of the later revolutions in religion, science and politics would have "
    "moved so quickly. Either way, by 1500 Europe held perhaps twenty million printed "
    "books, more than all the scribes of the previous thousand years had produced, and "
    "the habits of reading in private, checking a source and comparing editions had "
    "become ordinary for a growing part of the population in towns across the continent."
)
LONG_PROMPT = (
    LONG_TEXT
    + "\n\nRewrite the text above as a much longer essay, with a title, many sections and "
    "many more details about every person, place and date it mentions."
)

PROMPTS = {"short": SHORT_PROMPT, "long": LONG_PROMPT}


def system_message():
    # The nonce comes first so that the prompts differ from their third token on.
    return f"Session {uuid.uuid4().hex[:12]}. You are a helpful AI assistant."


class Result:
    def __init__(self):
        self.prompt_tokens = None
        self.output_tokens = None
        self.chunks = 0
        self.start = None
        self.first = None
        self.last = None
        self.error = None

    @property
    def ttft(self):
        return self.first - self.start

    @property
    def gen_time(self):
        return self.last - self.first


def sse_events(resp):
    """Yields the JSON payload of each `data:` line."""
    while True:
        line = resp.readline()
        if not line:
            return
        line = line.strip()
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            return
        yield json.loads(data)


def post_stream(url, path, body, headers):
    u = urllib.parse.urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
    conn.request("POST", path, body=json.dumps(body), headers=headers)
    resp = conn.getresponse()
    if resp.status != 200:
        text = resp.read().decode("utf-8", "replace")[:500]
        conn.close()
        raise RuntimeError(f"{url}{path}: HTTP {resp.status}: {text}")
    return conn, resp


class Keyplane:
    def __init__(self, name, url, key, model):
        self.name, self.url, self.key, self.model = name, url, key, model

    def run(self, prompt, max_tokens, res):
        body = {
            "systemInstruction": {"parts": [{"text": system_message()}]},
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "generationConfig": {"temperature": 0, "maxOutputTokens": max_tokens},
        }
        path = f"/v1beta/models/{self.model}:streamGenerateContent?alt=sse"
        headers = {"Content-Type": "application/json", "x-goog-api-key": self.key}
        res.start = time.perf_counter()
        conn, resp = post_stream(self.url, path, body, headers)
        try:
            for event in sse_events(resp):
                if "error" in event:
                    raise RuntimeError(f"{self.name}: error mid-stream: {event['error']}")
                now = time.perf_counter()
                text = "".join(
                    p.get("text", "")
                    for c in event.get("candidates", [])
                    for p in c.get("content", {}).get("parts", [])
                )
                if text:
                    res.chunks += 1
                    if res.first is None:
                        res.first = now
                    res.last = now
                usage = event.get("usageMetadata")
                if usage:
                    res.prompt_tokens = usage.get("promptTokenCount", res.prompt_tokens)
                    res.output_tokens = usage.get("candidatesTokenCount", res.output_tokens)
        finally:
            conn.close()


class OpenAIChat:
    """llama-server and llama-cpp-python's server: /v1/chat/completions with stream."""

    def __init__(self, name, url, extra):
        self.name, self.url, self.extra = name, url, extra
        self.prompt_tokens_cache = {}

    def body(self, prompt, max_tokens, stream):
        body = {
            "messages": [
                {"role": "system", "content": system_message()},
                {"role": "user", "content": prompt},
            ],
            "temperature": 0,
            "max_tokens": max_tokens,
            "stream": stream,
        }
        body.update(self.extra)
        return body

    def count_prompt(self, prompt):
        """Prompt tokens from a one-token non-streamed answer, for servers whose stream
        carries no usage."""
        if prompt not in self.prompt_tokens_cache:
            u = urllib.parse.urlsplit(self.url)
            conn = http.client.HTTPConnection(u.hostname, u.port, timeout=300)
            body = self.body(prompt, 1, False)
            body.pop("stream_options", None)
            conn.request(
                "POST",
                "/v1/chat/completions",
                body=json.dumps(body),
                headers={"Content-Type": "application/json"},
            )
            resp = conn.getresponse()
            data = json.loads(resp.read())
            conn.close()
            self.prompt_tokens_cache[prompt] = data["usage"]["prompt_tokens"]
        return self.prompt_tokens_cache[prompt]

    def run(self, prompt, max_tokens, res):
        body = self.body(prompt, max_tokens, True)
        res.start = time.perf_counter()
        conn, resp = post_stream(
            self.url, "/v1/chat/completions", body, {"Content-Type": "application/json"}
        )
        try:
            for event in sse_events(resp):
                if "error" in event:
                    raise RuntimeError(f"{self.name}: error mid-stream: {event['error']}")
                now = time.perf_counter()
                text = "".join(
                    (c.get("delta") or {}).get("content") or "" for c in event.get("choices", [])
                )
                if text:
                    res.chunks += 1
                    if res.first is None:
                        res.first = now
                    res.last = now
                usage = event.get("usage")
                if usage:
                    res.prompt_tokens = usage.get("prompt_tokens", res.prompt_tokens)
                    res.output_tokens = usage.get("completion_tokens", res.output_tokens)
        finally:
            conn.close()
        if res.output_tokens is None:
            # One streamed chunk per token (llama-cpp-python).
            res.output_tokens = res.chunks
        if res.prompt_tokens is None:
            res.prompt_tokens = self.count_prompt(prompt)


def run_cell(server, prompt, concurrency, max_tokens):
    results = [Result() for _ in range(concurrency)]

    def one(res):
        try:
            server.run(prompt, max_tokens, res)
        except Exception as e:  # reported by the caller
            res.error = e

    threads = [threading.Thread(target=one, args=(r,)) for r in results]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if r.error is not None:
            raise RuntimeError(f"{server.name}: {r.error}")
        if r.first is None or r.prompt_tokens is None or r.output_tokens is None:
            raise RuntimeError(f"{server.name}: a stream ended without text or token counts")
    prompt_tokens = sum(r.prompt_tokens for r in results)
    slowest_ttft = max(r.ttft for r in results)
    gen = sum(
        (r.output_tokens - 1) / r.gen_time for r in results if r.output_tokens > 1 and r.gen_time > 0
    )
    return {
        "prompt_tokens": prompt_tokens / concurrency,
        "ttft_ms": 1e3 * sum(r.ttft for r in results) / concurrency,
        "pp_tps": prompt_tokens / slowest_ttft,
        "out_tokens": sum(r.output_tokens for r in results) / concurrency,
        "gen_tps": gen,
    }


def pin(pid, cpu):
    """Moves every thread of a running process to one CPU."""
    subprocess.run(
        ["taskset", "-a", "-p", "-c", str(cpu), str(pid)],
        check=True,
        stdout=subprocess.DEVNULL,
    )


def side_by_side(kp, ls, pids, cpus, rounds, prompts, levels, max_tokens):
    """Per (prompt, concurrency): one (keyplane cell, llama-server cell, keyplane's CPU) a
    round, both cells run at the same moment with each server alone on its CPU."""
    # The client may run anywhere: it sleeps on its sockets nearly all the time.
    os.sched_setaffinity(0, range(os.cpu_count()))
    out = {}
    for rnd in range(rounds):
        kp_cpu, ls_cpu = (cpus[0], cpus[1]) if rnd % 2 == 0 else (cpus[1], cpus[0])
        pin(pids[0], kp_cpu)
        pin(pids[1], ls_cpu)
        # One short cell after the move, untimed, so that neither starts on cold caches.
        both(kp, ls, SHORT_PROMPT, 1, 8)
        for p in prompts:
            for c in levels:
                k, l = both(kp, ls, PROMPTS[p], c, max_tokens)
                print(
                    f"side by side {rnd + 1} {p:5} x{c} keyplane (CPU {kp_cpu}) gen {k['gen_tps']:6.1f}"
                    f"  llama-server (CPU {ls_cpu}) gen {l['gen_tps']:6.1f}"
                    f"  ratio {k['gen_tps'] / l['gen_tps']:.1%}",
                    file=sys.stderr,
                )
                out.setdefault((p, c), []).append((k, l, kp_cpu))
    return out


def both(a, b, prompt, concurrency, max_tokens):
    """run_cell on two servers at the same moment."""
    cells = [None, None]
    errors = []

    def one(i, server):
        try:
            cells[i] = run_cell(server, prompt, concurrency, max_tokens)
        except Exception as e:  # raised below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(i, s)) for i, s in enumerate((a, b))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return cells


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def print_side_by_side(paired, prompts, levels, args):
    n = args.side_by_side_rounds
    print(
        f"\nSide by side: Keyplane and llama-server at the same moment, one CPU each, "
        f"{n} rounds, the two swapping CPUs between rounds; ratio = geometric mean over the "
        f"rounds of Keyplane's figure / llama-server's in the same round.\n"
    )
    print(
        "| prompt | concurrent | Keyplane gen tok/s by round | llama-server gen tok/s by round "
        "| Keyplane / llama-server: prompt | Keyplane / llama-server: generation |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    gens = []
    for p in prompts:
        for c in levels:
            rows = paired[(p, c)]
            kg = " / ".join(f"{k['gen_tps']:.1f}" for k, _, _ in rows)
            lg = " / ".join(f"{l['gen_tps']:.1f}" for _, l, _ in rows)
            pp = geomean([k["pp_tps"] / l["pp_tps"] for k, l, _ in rows])
            gen = geomean([k["gen_tps"] / l["gen_tps"] for k, l, _ in rows])
            gens.append(gen)
            print(f"| {p} | {c} | {kg} | {lg} | {pp:.1%} | {gen:.1%} |")
    print(
        f"\nGeneration, Keyplane / llama-server side by side: {min(gens):.1%}-{max(gens):.1%} "
        f"over the {len(gens)} cells (target >= 95% in each)."
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--keyplane", required=True, help="base URL")
    ap.add_argument("--keyplane-key", required=True)
    ap.add_argument("--keyplane-model", default="smollm2-135m-instruct")
    ap.add_argument("--llama-server", help="llama.cpp's llama-server base URL")
    ap.add_argument("--llama-cpp-python", help="llama-cpp-python's server base URL")
    ap.add_argument("--concurrency", default="1,2,4")
    ap.add_argument("--prompts", default="short,long")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument(
        "--reference-rounds",
        type=int,
        default=1,
        help="rounds llama-cpp-python (a reference, not what the target compares with) runs in",
    )
    ap.add_argument(
        "--reference-concurrency",
        type=int,
        default=1,
        help="the most concurrent requests llama-cpp-python (one at a time) is sent",
    )
    ap.add_argument(
        "--side-by-side-rounds",
        type=int,
        default=0,
        help="rounds with Keyplane and llama-server measured at once, one CPU each",
    )
    ap.add_argument("--keyplane-pid", type=int, help="for --side-by-side-rounds")
    ap.add_argument("--llama-server-pid", type=int, help="for --side-by-side-rounds")
    ap.add_argument("--cpus", default="0,1", help="the two CPUs side by side rounds use")
    args = ap.parse_args()

    servers = [Keyplane("keyplane", args.keyplane, args.keyplane_key, args.keyplane_model)]
    if args.llama_server:
        servers.append(
            OpenAIChat(
                "llama-server",
                args.llama_server,
                {"cache_prompt": False, "stream_options": {"include_usage": True}},
            )
        )
    if args.llama_cpp_python:
        servers.append(OpenAIChat("llama-cpp-python", args.llama_cpp_python, {}))
    levels = [int(c) for c in args.concurrency.split(",")]
    prompts = args.prompts.split(",")

    # Warm-up: every server answers once before anything is timed.
    for s in servers:
        run_cell(s, SHORT_PROMPT, 1, 8)

    best = {}
    for rnd in range(args.rounds):
        for p in prompts:
            for c in levels:
                for s in servers:
                    # The slowest server, and no target's measure: its figures from the
                    # first rounds only keep the whole harness within its ten minutes.
                    if s.name == "llama-cpp-python" and rnd >= args.reference_rounds:
                        continue
                    # It answers one request at a time, so more at once only queue: its
                    # cells above one at a time measure its queue, at a minute a round.
                    if s.name == "llama-cpp-python" and c > args.reference_concurrency:
                        continue
                    cell = run_cell(s, PROMPTS[p], c, args.max_tokens)
                    print(
                        f"round {rnd + 1} {p:5} x{c} {s.name:16} pp {cell['pp_tps']:7.0f} tok/s"
                        f"  gen {cell['gen_tps']:6.1f} tok/s  out {cell['out_tokens']:.0f}",
                        file=sys.stderr,
                    )
                    key = (p, c, s.name)
                    old = best.get(key)
                    if old is None:
                        best[key] = dict(cell)
                    else:
                        # Best round per figure: the run least disturbed by other work.
                        for f in ("pp_tps", "gen_tps"):
                            old[f] = max(old[f], cell[f])
                        old["ttft_ms"] = min(old["ttft_ms"], cell["ttft_ms"])

    paired = None
    if args.side_by_side_rounds > 0 and args.llama_server:
        if not (args.keyplane_pid and args.llama_server_pid):
            raise SystemExit("--side-by-side-rounds needs --keyplane-pid and --llama-server-pid")
        paired = side_by_side(
            servers[0],
            servers[1],
            (args.keyplane_pid, args.llama_server_pid),
            [int(c) for c in args.cpus.split(",")],
            args.side_by_side_rounds,
            prompts,
            levels,
            args.max_tokens,
        )

    print(
        f"Local model: SmolLM2-135M-Instruct Q4_1, 1 thread, greedy, {args.max_tokens} output "
        f"tokens max, streamed; "
        + (
            f"best of {args.rounds} alternating rounds"
            if args.rounds > 1
            else "one round, the servers in turn, each alone"
        )
        + (
            " (llama-cpp-python, a reference outside the target, in the first "
            + (
                "round only)"
                if args.reference_rounds <= 1
                else f"{args.reference_rounds} rounds only)"
            )
            if args.llama_cpp_python and args.reference_rounds < args.rounds
            else ""
        )
        + (
            f"; llama-cpp-python's server answers one request at a time and is sent at most "
            f"{args.reference_concurrency} at once"
            if args.llama_cpp_python
            else ""
        )
        + ".\n"
    )
    print(
        "| prompt | concurrent | server | prompt tokens | TTFT ms | prompt tok/s | output tokens "
        "| generation tok/s (aggregate) | Keyplane / this: prompt | Keyplane / this: generation |"
    )
    print("| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for p in prompts:
        for c in levels:
            kp = best[(p, c, "keyplane")]
            for s in servers:
                cell = best.get((p, c, s.name))
                if cell is None:
                    continue
                if s.name == "keyplane":
                    ratios = "| |"
                else:
                    ratios = (
                        f"| {kp['pp_tps'] / cell['pp_tps']:.0%} "
                        f"| {kp['gen_tps'] / cell['gen_tps']:.0%} |"
                    )
                print(
                    f"| {p} | {c} | {s.name} | {cell['prompt_tokens']:.0f} | {cell['ttft_ms']:.0f} "
                    f"| {cell['pp_tps']:.0f} | {cell['out_tokens']:.0f} | {cell['gen_tps']:.1f} {ratios}"
                )
    if paired is not None:
        print_side_by_side(paired, prompts, levels, args)


if __name__ == "__main__":
    main()
