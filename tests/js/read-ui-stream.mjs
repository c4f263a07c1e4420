// Read a Vercel AI SDK UI message stream with the `ai` package's own parser.
//
//   node read-ui-stream.mjs URL [PROMPT]
//
// POSTs a `useChat`-shaped body (UI messages with `parts`) to URL, parses the
// SSE response the way the SDK's DefaultChatTransport does (parseJsonEventStream
// with the strict uiMessageChunkSchema: a chunk the schema rejects fails the
// run), rebuilds the assistant message with readUIMessageStream, and prints
// one JSON object on stdout:
//
//   {status, headers, chunks: [chunk types], snapshots, message: <the final UIMessage>,
//    toolStates: {toolCallId: [the part's states in order]},
//    toolInputs: {toolCallId: [each distinct partial input while its input streamed]}}
//
// Exits 1 (the error on stderr) when the request or the parse fails.

import { parseJsonEventStream, readUIMessageStream, uiMessageChunkSchema } from "ai";

const [url, prompt = "What is the weather in Paris?"] = process.argv.slice(2);
if (!url) {
  console.error("usage: node read-ui-stream.mjs URL [PROMPT]");
  process.exit(2);
}

const body = {
  id: "chat-acceptance",
  messages: [{ id: "user-1", role: "user", parts: [{ type: "text", text: prompt }] }],
  trigger: "submit-message",
};

const response = await fetch(url, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify(body),
  signal: AbortSignal.timeout(30_000),
});
if (!response.ok || !response.body) {
  console.error(`HTTP ${response.status}: ${await response.text()}`);
  process.exit(1);
}

const chunkTypes = [];
const chunks = parseJsonEventStream({ stream: response.body, schema: uiMessageChunkSchema })
  .pipeThrough(
    new TransformStream({
      transform(result, controller) {
        if (!result.success) throw result.error; // as DefaultChatTransport does
        chunkTypes.push(result.value.type);
        controller.enqueue(result.value);
      },
    }),
  );

let message = null;
let snapshots = 0;
const toolStates = {};
const toolInputs = {};
for await (const snapshot of readUIMessageStream({ stream: chunks, terminateOnError: true })) {
  snapshots++;
  message = snapshot;
  for (const part of snapshot.parts) {
    if (part.toolCallId === undefined) continue;
    const states = (toolStates[part.toolCallId] ??= []);
    if (states.at(-1) !== part.state) states.push(part.state);
    if (part.state === "input-streaming" && part.input !== undefined) {
      const inputs = (toolInputs[part.toolCallId] ??= []);
      const input = JSON.stringify(part.input);
      if (inputs.at(-1) !== input) inputs.push(input);
    }
  }
}

const headers = Object.fromEntries(response.headers.entries());
process.stdout.write(
  JSON.stringify({
    status: response.status,
    headers,
    chunks: chunkTypes,
    snapshots,
    message,
    toolStates,
    toolInputs: Object.fromEntries(
      Object.entries(toolInputs).map(([id, inputs]) => [id, inputs.map((i) => JSON.parse(i))]),
    ),
  }) + "\n",
);
