// Building the page. Everything shown comes in as text (`textContent` and text nodes): vendor
// data is hostile, and no string is ever parsed as HTML.

/** An element: `h('td', {class: 'num'}, 'text', child, …)`. Props `on…` add listeners. */
export function h(tag, props = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(props ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') el.className = value;
    else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
    else if (key === 'value') el.value = String(value);
    else el.setAttribute(key, value === true ? '' : String(value));
  }
  add(el, children);
  return el;
}

export function add(el, children) {
  for (const child of [children].flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

/** A link inside the dashboard (always a `#/…` address). */
export function link(hash, ...children) {
  return h('a', { href: `#/${hash}` }, ...children);
}

const TONES = {
  success: 'ok', delivered: 'ok', accepted: 'ok', delivering: 'ok', duplicate: 'info',
  failed: 'warn', retrying: 'warn', paused: 'warn', gone: 'warn', disabled: 'neutral', pending: 'neutral',
  in_flight: 'info', test: 'info', orphaned: 'bad', failing: 'bad', removed: 'neutral', dead: 'bad', rejected: 'bad', dropped: 'bad',
};

export function badge(text, tone = TONES[text] ?? 'neutral') {
  return h('span', { class: `badge ${tone}` }, String(text).replace('_', ' '));
}

/** A time as "3 min ago", the exact time on hover. */
export function when(iso) {
  if (!iso) return h('span', { class: 'muted' }, '—');
  const at = new Date(iso);
  return h('time', { datetime: iso, title: iso }, ago(at));
}

export function ago(at) {
  const s = Math.round((Date.now() - at.getTime()) / 1000);
  if (Number.isNaN(s)) return '—';
  if (s < -5) return `in ${span(-s)}`;
  if (s < 5) return 'just now';
  return `${span(s)} ago`;
}

function span(s) {
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
  return `${Math.floor(s / 86400)} d`;
}

export function ms(value) {
  if (value === null || value === undefined) return '—';
  return value < 1000 ? `${value} ms` : `${(value / 1000).toFixed(2)} s`;
}

export function percent(rate) {
  if (rate === null || rate === undefined) return h('span', { class: 'muted' }, '—');
  const tone = rate >= 0.99 ? 'ok' : rate >= 0.9 ? 'warn' : 'bad';
  const text = rate === 1 ? '100%' : `${(rate * 100).toFixed(1)}%`;
  return h('span', { class: `rate ${tone}` }, text);
}

/** A table: `columns` are `{label, cell(row), class}`; rows none gives the empty state. */
export function table(columns, rows, emptyTitle, emptyText, testid) {
  if (!rows.length) return emptyState(emptyTitle, emptyText);
  return h('table', { 'data-testid': testid },
    h('thead', {}, h('tr', {}, columns.map((c) => h('th', { class: c.class }, c.label)))),
    h('tbody', {}, rows.map((row) => h('tr', {}, columns.map((c) => h('td', { class: c.class }, c.cell(row)))))));
}

export function emptyState(title, text) {
  return h('div', { class: 'empty' }, h('strong', {}, title), text ?? '');
}

export function notice(tone, ...children) {
  return h('p', { class: `notice ${tone}`, role: tone === 'bad' ? 'alert' : 'status' }, ...children);
}

export function errorNotice(error) {
  const code = error.code && error.status ? ` (${error.status} ${error.code})` : '';
  return notice('bad', `${error.message}${code}`);
}

export function card(...children) {
  return h('section', { class: 'card' }, ...children);
}

export function facts(pairs) {
  return h('dl', { class: 'facts' }, pairs.filter(Boolean).flatMap(([k, v]) => [h('dt', {}, k), h('dd', {}, v ?? '—')]));
}

export function json(value) {
  return h('pre', { class: 'json' }, JSON.stringify(value, null, 2));
}

export function field(label, input, cls = '') {
  return h('label', { class: `field ${cls}` }, h('span', {}, label), input);
}

export function select(name, options, current) {
  return h('select', { name },
    options.map(([value, label]) => h('option', { value, selected: value === (current ?? '') }, label)));
}

export function input(name, current, placeholder, type = 'text') {
  return h('input', { name, type, value: current ?? '', placeholder, spellcheck: 'false' });
}

/** A button that shows it is busy while `action` runs, and cannot be pressed twice. */
export function action(label, cls, run, testid) {
  const button = h('button', { type: 'button', class: cls, 'data-testid': testid }, label);
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await run(button);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

export function pageHead(title, subtitle, ...right) {
  document.title = `${title} · callgate`;
  return h('div', { class: 'page-head' },
    h('div', {}, h('h1', {}, title), subtitle ? h('p', { class: 'muted' }, subtitle) : null),
    h('div', {}, ...right));
}
