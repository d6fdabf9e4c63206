// The live tail: `GET /v1/admin/stream` through the browser's EventSource. EventSource sends
// no header, so each stream opens with a single-use ticket from `POST
// /v1/admin/stream/tickets` (the token goes in that POST's header; the ticket, good for one
// stream within 60 s, is what goes in the URL). The stream keeps running while the operator
// moves between views; its newest messages are kept here.

import { post } from './api.js';

const KEEP = 500;

const state = {
  source: null,
  running: false,
  filters: { route: '', source: '', type: '' },
  messages: [],
  status: { tone: 'info', text: 'Not started.' },
  listeners: new Set(),
};

export function tailState() {
  return state;
}

export function onTail(listener) {
  state.listeners.add(listener);
  return () => state.listeners.delete(listener);
}

function changed(message) {
  for (const listener of state.listeners) listener(message);
  const dot = document.getElementById('tail-dot');
  if (dot) dot.hidden = !state.running;
}

function say(tone, text) {
  state.status = { tone, text };
}

export async function startTail(filters) {
  stopTail();
  state.filters = { ...filters };
  const { url } = await post('/v1/admin/stream/tickets');
  const stream = new URL(url, location.origin);
  for (const [key, value] of Object.entries(state.filters)) {
    if (value) stream.searchParams.set(key, value);
  }
  const source = new EventSource(stream);
  state.source = source;
  state.running = true;
  say('info', 'Connecting…');
  changed();
  const push = (kind, event) => {
    let data = {};
    try {
      data = JSON.parse(event.data);
    } catch {
      data = {};
    }
    const message = { kind, data, seen: new Date().toISOString() };
    state.messages.unshift(message);
    if (state.messages.length > KEEP) state.messages.length = KEEP;
    changed(message);
  };
  source.addEventListener('ready', () => {
    say('ok', 'Live: new events and delivery outcomes appear as they happen.');
    changed();
  });
  source.addEventListener('accepted', (e) => push('accepted', e));
  source.addEventListener('outcome', (e) => push('outcome', e));
  // The gateway ends a stream with `dropped` (this reader fell behind) or `closed` (shutdown):
  // EventSource would reconnect by itself with a used ticket, so it is closed here.
  for (const end of ['dropped', 'closed']) {
    source.addEventListener(end, (e) => {
      let why = '';
      try {
        why = JSON.parse(e.data).message ?? '';
      } catch {
        why = '';
      }
      stopTail();
      say('bad', end === 'dropped' ? `The gateway dropped this stream: ${why}` : `The gateway closed the stream: ${why}`);
      changed();
    });
  }
  source.onerror = () => {
    if (state.source !== source) return;
    stopTail();
    say('bad', 'The stream was lost. Start it again.');
    changed();
  };
}

export function stopTail() {
  if (state.source) state.source.close();
  const was = state.running;
  state.source = null;
  state.running = false;
  if (was) say('info', 'Stopped.');
  changed();
}

export function clearTail() {
  state.messages = [];
  changed();
}
