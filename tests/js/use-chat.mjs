// Drive the `ai` package's own chat (AbstractChat: the class under React's useChat, with
// DefaultChatTransport) against rxllm serve, as a page would.
//
//   node use-chat.mjs BASE_URL SCENARIO PROMPT
//
// SCENARIO:
//   tools   a two-step tool loop: the model calls a tool, onToolCall answers it with
//           addToolOutput, sendAutomaticallyWhen sends the result back, the model answers.
//   resume  a page reload mid-answer: the first page goes away while the answer streams;
//           a new page (with the user message it had saved) resumes with resumeStream().
//   stop    the stop button: POST {api}/{id}/stop while the answer streams, then a reload
//           finds nothing to resume.
//
// Prints one JSON object on stdout with what the chat ended with; exits 1 on an error.

import {
  AbstractChat,
  DefaultChatTransport,
  lastAssistantMessageIsCompleteWithToolCalls,
} from "ai";

const [base, scenario, prompt = "What is the weather in Paris?"] = process.argv.slice(2);
if (!base || !scenario) {
  console.error("usage: node use-chat.mjs BASE_URL tools|resume|stop [PROMPT]");
  process.exit(2);
}
const api = `${base}/api/chat`;

// The chat's state kept in memory, as React's useChat keeps it in a store.
class MemoryState {
  constructor(messages = []) {
    this.messages = messages;
    this.status = "ready";
    this.error = undefined;
  }
  pushMessage(message) {
    this.messages = this.messages.concat(message);
  }
  popMessage() {
    this.messages = this.messages.slice(0, -1);
  }
  replaceMessage(index, message) {
    this.messages = [
      ...this.messages.slice(0, index),
      this.snapshot(message),
      ...this.messages.slice(index + 1),
    ];
  }
  snapshot(value) {
    return structuredClone(value);
  }
}

class Chat extends AbstractChat {
  constructor({ messages, ...init }) {
    super({ ...init, state: new MemoryState(messages) });
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function until(condition, what, timeoutMs = 20_000) {
  const deadline = Date.now() + timeoutMs;
  while (!condition()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

// Settled: not busy, and still not busy a moment later (an automatic follow-up
// request starts right after a response ends).
async function settled(chat) {
  for (;;) {
    await until(() => chat.status === "ready" || chat.status === "error", "the chat to settle");
    await sleep(300);
    if (chat.status === "ready" || chat.status === "error") return;
  }
}

const textOf = (message) =>
  (message?.parts ?? [])
    .filter((part) => part.type === "text")
    .map((part) => part.text)
    .join("");

const answering = (chat) => chat.lastMessage?.role === "assistant" && textOf(chat.lastMessage);

const requests = [];
const transport = new DefaultChatTransport({
  api,
  fetch: async (url, init) => {
    requests.push({ method: init?.method ?? "GET", url: String(url) });
    const response = await fetch(url, init);
    requests.at(-1).status = response.status;
    return response;
  },
});
const errors = [];
const onError = (error) => errors.push(String(error?.message ?? error));
const out = { scenario, requests, errors };

if (scenario === "tools") {
  const calls = [];
  const chat = new Chat({
    id: "chat-tools",
    transport,
    onError,
    sendAutomaticallyWhen: lastAssistantMessageIsCompleteWithToolCalls,
    onToolCall: ({ toolCall }) => {
      calls.push(toolCall);
      // Not awaited, as the SDK's docs say: the chat is still processing this stream.
      chat.addToolOutput({
        tool: toolCall.toolName,
        toolCallId: toolCall.toolCallId,
        output: { city: toolCall.input.city, temperature: 21, unit: "celsius" },
      });
    },
  });
  await chat.sendMessage({ text: prompt });
  await until(() => requests.length >= 2, "the automatic second request");
  await settled(chat);
  Object.assign(out, { status: chat.status, calls, messages: chat.messages });
} else if (scenario === "resume") {
  const id = "chat-resume";
  const first = new Chat({ id, transport, onError });
  const sending = first.sendMessage({ text: prompt });
  await until(() => answering(first), "the first words of the answer");
  const partial = textOf(first.lastMessage);
  // The reload: the page goes away mid-answer (its connection closes) ...
  await first.stop();
  await sending;
  // ... and the new page starts with what the old one had saved: the user's message.
  const saved = first.messages.filter((message) => message.role === "user");
  const second = new Chat({ id, transport, onError, messages: saved });
  await second.resumeStream();
  await settled(second);
  Object.assign(out, { partial, status: second.status, messages: second.messages });
} else if (scenario === "stop") {
  const id = "chat-stop";
  const chat = new Chat({ id, transport, onError });
  const sending = chat.sendMessage({ text: prompt });
  await until(() => answering(chat), "the first words of the answer");
  // The stop button: the server stops generating; the chat reads the end of the stream.
  const stopped = await (await fetch(`${api}/${id}/stop`, { method: "POST" })).json();
  await sending;
  await settled(chat);
  const text = textOf(chat.lastMessage);
  // A reload after the stop finds nothing to resume (204).
  const again = new Chat({ id, transport, onError, messages: chat.messages });
  await again.resumeStream();
  await settled(again);
  Object.assign(out, {
    stopped,
    text,
    status: chat.status,
    messages: chat.messages,
    resumedMessages: again.messages.length,
  });
} else {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
process.stdout.write(JSON.stringify(out) + "\n");
