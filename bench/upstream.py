"""A deliberately fast canned OpenAI upstream for benchmarks (asyncio protocol, keep-alive).

It must never be the bottleneck, so it does no JSON parsing: any POST whose body contains
``"stream":true`` gets an SSE stream of chat chunks, any other POST a fixed chat completion.
"""

from __future__ import annotations

import argparse
import asyncio

COMPLETION = (
    b'{"id":"chatcmpl-bench","object":"chat.completion","created":1730000000,"model":"gpt-4o-mini-2024-07-18",'
    b'"choices":[{"index":0,"message":{"role":"assistant","content":"Paris is the capital of France.",'
    b'"refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],'
    b'"usage":{"prompt_tokens":24,"completion_tokens":8,"total_tokens":32,'
    b'"prompt_tokens_details":{"cached_tokens":0,"audio_tokens":0},'
    b'"completion_tokens_details":{"reasoning_tokens":0,"audio_tokens":0,"accepted_prediction_tokens":0,'
    b'"rejected_prediction_tokens":0}},"service_tier":"default","system_fingerprint":"fp_bench"}'
)
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nx-request-id: req_bench\r\n"
    b"x-ratelimit-remaining-requests: 499\r\nContent-Length: " + str(len(COMPLETION)).encode() + b"\r\n\r\n" + COMPLETION
)


def _chunk(content: str | None, finish: str | None, usage: bool) -> bytes:
    delta = "{}" if content is None else '{"content":"%s"}' % content  # noqa: UP031 - a JSON template: an f-string would double every brace
    fin = "null" if finish is None else f'"{finish}"'
    tail = ',"usage":null' if usage else ""
    return (
        'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1730000000,'  # noqa: UP031 - a JSON template: an f-string would double every brace
        '"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_bench","choices":[{"index":0,'
        '"delta":%s,"logprobs":null,"finish_reason":%s}]%s}\n\n' % (delta, fin, tail)
    ).encode()


def _stream_events(usage: bool) -> list[bytes]:
    events = [_chunk(w, None, usage) for w in ["Paris", " is", " the", " capital", " of", " France", "."] * 3]
    events.append(_chunk(None, "stop", usage))
    if usage:
        events.append(
            b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1730000000,'
            b'"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_bench","choices":[],'
            b'"usage":{"prompt_tokens":24,"completion_tokens":22,"total_tokens":46}}\n\n'
        )
    events.append(b"data: [DONE]\n\n")
    return events


def _chunked(events: list[bytes]) -> bytes:
    head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(e), e) for e in events)
    return head + body + b"0\r\n\r\n"


STREAM = _chunked(_stream_events(False))
STREAM_USAGE = _chunked(_stream_events(True))


class Upstream(asyncio.Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].lower()
            length = 0
            at = head.find(b"content-length:")
            if at >= 0:
                length = int(head[at + 15 : head.find(b"\r\n", at) if head.find(b"\r\n", at) > 0 else None].strip())
            if len(self.buffer) < end + 4 + length:
                return
            body = self.buffer[end + 4 : end + 4 + length]
            self.buffer = self.buffer[end + 4 + length :]
            if b'"stream":true' in body or b'"stream": true' in body:
                self.transport.write(STREAM_USAGE if b"include_usage" in body else STREAM)
            else:
                self.transport.write(RESPONSE)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    loop = asyncio.new_event_loop()
    server = loop.run_until_complete(loop.create_server(Upstream, "127.0.0.1", args.port, backlog=1024))
    print("ready", flush=True)
    try:
        loop.run_forever()
    finally:
        server.close()


if __name__ == "__main__":
    main()
