// One function per view: each gets `{root, arg, query, go}` and fills `root`.

import { eventTypes, get, post, seg } from './api.js';
import {
  action, add, badge, card, clear, emptyState, errorNotice, facts, field, h, input, json, link, ms, notice,
  pageHead, percent, select, table, when,
} from './dom.js';
import { clearTail, onTail, startTail, stopTail, tailState } from './tail.js';

const SINCE_HINT = 'e.g. 1h, 30m, 2d';

/** A filter form whose fields go to the view's address (so a reload or a link keeps them). */
function filterForm(ctx, path, fields) {
  const form = h('form', { class: 'filters', method: 'post' }, fields,
    h('button', { type: 'submit', class: 'primary' }, 'Apply'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) params.set(key, value);
    const q = params.toString();
    ctx.go(q ? `${path}?${q}` : path);
  });
  return form;
}

function query(ctx, ...keys) {
  const out = {};
  for (const key of keys) out[key] = ctx.query.get(key) ?? '';
  return out;
}

function stateOf(route) {
  if (!route.configured) return route.orphaned ? 'orphaned' : 'removed';
  if (!route.enabled) return route.orphaned ? 'orphaned' : 'disabled';
  if (route.paused) return 'paused';
  // Most of its recent attempts failed: it is being tried, and not getting through.
  return route.recent.attempts > 0 && route.recent.success_rate < 0.5 ? 'failing' : 'delivering';
}

function routeOptions(routes, any = 'Any route') {
  return [['', any], ...routes.map((r) => [r.name, r.name])];
}

/** A "load older" row that appends the next page. */
function pager(next, load) {
  if (next === null || next === undefined) return null;
  const button = action('Older', 'small', async () => {
    button.closest('.pager').remove();
    await load(next);
  }, 'older');
  return h('div', { class: 'pager' }, button);
}

// ——— Overview ———

/** How often the overview reads the routes again while it is open and the tab is visible. */
const OVERVIEW_EVERY_MS = 10_000;

export async function overview(ctx) {
  const first = await get('/v1/admin/routes');
  const root = ctx.root;
  const stats = h('div', { class: 'stats' });
  const message = h('div');
  const box = h('div');
  const updated = h('span', { class: 'muted updated' });
  const update = async () => {
    try {
      paint((await get('/v1/admin/routes')).routes);
    } catch (e) {
      if (e.status !== 401) clear(message).append(errorNotice(e));
    }
  };
  const columns = [
    { label: 'Route', cell: (r) => [h('strong', {}, r.name), r.paused_reason ? h('span', { class: 'sub' }, `${r.paused_reason}, `, when(r.paused_since)) : null] },
    { label: 'State', cell: (r) => badge(stateOf(r)) },
    { label: 'Backlog', class: 'num', cell: (r) => r.backlog },
    { label: 'Dead letters', class: 'num', cell: (r) => (r.dead_letters ? link(`dead-letters?route=${seg(r.name)}`, String(r.dead_letters)) : '0') },
    { label: 'Success (1 h)', class: 'num', cell: (r) => [percent(r.recent.success_rate), h('span', { class: 'sub' }, `${r.recent.successes} of ${r.recent.attempts}`)] },
    { label: 'p50', class: 'num', cell: (r) => ms(r.recent.p50_ms) },
    { label: 'p95', class: 'num', cell: (r) => ms(r.recent.p95_ms) },
    {
      label: '', class: 'actions', cell: (r) => [
        h('a', { class: 'button small', href: `#/deliveries/${seg(r.name)}` }, 'Log'),
        r.configured ? action(r.paused ? 'Resume' : 'Pause', r.paused ? 'small primary' : 'small', async () => {
          try {
            await post(`/v1/admin/routes/${seg(r.name)}/${r.paused ? 'resume' : 'pause'}`);
            clear(message);
            await update();
          } catch (e) {
            clear(message).append(errorNotice(e));
          }
        }, `${r.paused ? 'resume' : 'pause'}-${r.name}`) : null,
      ],
    },
  ];
  const paint = (routes) => {
    const total = (key) => routes.reduce((n, r) => n + (r[key] ?? 0), 0);
    const paused = routes.filter((r) => r.paused).length;
    const recent = routes.reduce((acc, r) => ({ a: acc.a + r.recent.attempts, s: acc.s + r.recent.successes }), { a: 0, s: 0 });
    clear(stats).append(
      stat('Routes', routes.length),
      stat('Backlog', total('backlog'), total('backlog') > 0 ? 'warn' : ''),
      stat('Dead letters', total('dead_letters'), total('dead_letters') > 0 ? 'bad' : ''),
      stat('Paused', paused, paused > 0 ? 'warn' : ''),
      stat('Success, last hour', recent.a ? percent(recent.s / recent.a) : '—'));
    clear(box).append(table(columns, routes, 'No routes', 'Add a [routes.NAME] table to the configuration and reload.', 'routes'));
    updated.textContent = `Updated ${new Date().toLocaleTimeString()}`;
  };
  paint(first.routes);
  add(root, [
    pageHead('Overview', 'Every route, its queue and how its deliveries went in the last hour.',
      updated, action('Refresh', '', update, 'refresh')),
    stats,
    h('section', { class: 'card flush' }, h('h2', {}, 'Routes'), message, box),
    await testSend(first.routes.filter((r) => r.configured)),
  ]);
  const timer = setInterval(() => {
    if (document.visibilityState === 'visible') update();
  }, OVERVIEW_EVERY_MS);
  ctx.cleanup(() => clearInterval(timer));
}

function stat(label, value, tone = '') {
  return h('div', { class: `stat ${tone}` }, h('div', { class: 'label' }, label), h('div', { class: 'value' }, value));
}

async function testSend(routes) {
  const panel = card(h('h2', {}, 'Test send'),
    h('p', { class: 'muted' }, 'Sends a sample event of the chosen type to a route now, signed and templated like a delivery, outside the queue (also on a paused route), and shows what the receiver answered.'));
  if (!routes.length) {
    panel.append(emptyState('No configured route', 'There is nothing to send to.'));
    return panel;
  }
  const types = await eventTypes().catch(() => []);
  const route = select('route', routes.map((r) => [r.name, r.name]));
  const type = select('type', [['', 'Route default'], ...types.map((t) => [t, t])]);
  const result = h('div', { class: 'result', 'data-testid': 'test-result' });
  const send = action('Send test', 'primary', async () => {
    clear(result).append(h('p', { class: 'muted' }, 'Sending…'));
    try {
      const r = await post(`/v1/admin/routes/${seg(route.value)}/test`, { type: type.value });
      clear(result).append(
        notice(r.outcome === 'success' ? 'ok' : 'bad',
          r.outcome === 'success' ? 'Delivered: ' : 'Not delivered: ',
          r.status ? `HTTP ${r.status}` : (r.error ?? 'no answer'), ` in ${ms(r.duration_ms)}.`),
        facts([['Route', r.route], ['Type', r.type], ['Event id', h('code', {}, r.event_id)], ['Subject', r.subject],
          ['Answer', r.response ? h('code', {}, r.response) : '—'], ['Error', r.error ?? '—']]));
    } catch (e) {
      clear(result).append(errorNotice(e));
    }
  }, 'send-test');
  panel.append(h('div', { class: 'filters' }, field('Route', route), field('Event type', type), send), result);
  return panel;
}

// ——— Delivery log ———

export async function deliveries(ctx) {
  const { routes } = await get('/v1/admin/routes');
  const name = ctx.arg || routes[0]?.name;
  const f = query(ctx, 'outcome', 'subject', 'since', 'test');
  ctx.root.append(pageHead('Delivery log', 'Every attempt of a route, newest first: deliveries and test sends.'));
  if (!name) {
    ctx.root.append(card(emptyState('No routes', 'There is no delivery log without a route.')));
    return;
  }
  const routeSelect = select('route', routes.map((r) => [r.name, r.name]), name);
  routeSelect.addEventListener('change', () => ctx.go(`deliveries/${seg(routeSelect.value)}`));
  const form = filterForm(ctx, `deliveries/${seg(name)}`, [
    field('Route', routeSelect),
    field('Outcome', select('outcome', [['', 'Any outcome'], ['success', 'Success'], ['failed', 'Failed'], ['dead', 'Dead']], f.outcome)),
    field('Subject (call)', input('subject', f.subject, 'source:call_id')),
    field('Since', input('since', f.since, SINCE_HINT)),
    field('Kind', select('test', [['', 'Deliveries and tests'], ['false', 'Deliveries only'], ['true', 'Test sends only']], f.test)),
  ]);
  // The route is in the path, not a filter.
  routeSelect.removeAttribute('name');
  ctx.root.append(form);
  const panel = h('section', { class: 'card flush' });
  ctx.root.append(panel);
  const columns = [
    { label: 'When', cell: (d) => when(d.at) },
    { label: 'Event', cell: (d) => (d.test ? badge('test') : d.event_id ? link(`event/${seg(d.event_id)}`, h('code', { class: 'clip' }, d.event_id)) : '—') },
    { label: 'Type', cell: (d) => d.type ?? '—' },
    { label: 'Subject', cell: (d) => (d.subject && !d.test ? link(`call/${seg(d.subject)}`, d.subject) : d.subject ?? '—') },
    { label: 'Attempt', class: 'num', cell: (d) => d.attempt },
    { label: 'Outcome', cell: (d) => badge(d.outcome) },
    { label: 'Status', class: 'num', cell: (d) => d.status ?? '—' },
    { label: 'Duration', class: 'num', cell: (d) => ms(d.duration_ms) },
    { label: 'Answer', class: 'wrap', cell: (d) => (d.error ? h('span', { class: 'muted' }, d.error) : d.response ? h('code', {}, d.response) : '—') },
  ];
  const load = async (before) => {
    const page = await get(`/v1/admin/routes/${seg(name)}/deliveries`, { ...f, before_id: before });
    if (before && page.deliveries.length) {
      panel.querySelector('tbody').append(...table(columns, page.deliveries).querySelector('tbody').children);
    } else if (!before) {
      panel.append(table(columns, page.deliveries, 'Nothing logged', 'No attempt matches these filters yet.', 'deliveries'));
    }
    const more = pager(page.next_before_id, load);
    if (more) panel.append(more);
  };
  await load(null);
}

// ——— One event ———

export async function event(ctx) {
  const id = ctx.arg;
  const lookup = h('input', { name: 'id', type: 'search', value: id ?? '', placeholder: 'ce_…', spellcheck: 'false' });
  const form = h('form', { class: 'filters', method: 'post' }, field('Event id', lookup, 'wide'),
    h('button', { type: 'submit', class: 'primary' }, 'Show'));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    if (lookup.value.trim()) ctx.go(`event/${seg(lookup.value.trim())}`);
  });
  ctx.root.append(pageHead('Event', 'One stored event and where each route\'s delivery of it stands.',
    id ? action('Refresh', '', () => ctx.refresh(), 'refresh') : null), form);
  if (!id) {
    ctx.root.append(card(emptyState('No event chosen', 'Enter an event id, or open one from the delivery log or the live tail.')));
    return;
  }
  const e = await get(`/v1/admin/events/${seg(id)}`);
  ctx.root.append(h('div', { class: 'grid2' },
    card(h('h2', {}, 'Event'), facts([
      ['Id', h('code', {}, e.id)], ['Type', e.type], ['Subject', link(`call/${seg(e.subject)}`, e.subject)],
      ['Received', when(e.received_at)], ['Source', e.event?.source ?? '—'],
    ])),
    card(h('h2', {}, 'Deliveries'), e.deliveries.length
      ? e.deliveries.map((d) => routeDelivery(d))
      : emptyState('No route', 'No route was subscribed to this event.'))),
  card(h('h2', {}, 'CloudEvent as stored'), json(e.event)));
}

function routeDelivery(d) {
  const when_ = d.state === 'in_flight' ? ['leased until ', when(d.lease_until)] : d.next_at ? ['due ', when(d.next_at)] : [];
  return h('div', { class: 'route-block', 'data-testid': `delivery-${d.route}` },
    h('div', { class: 'route-head' }, h('strong', {}, d.route), badge(d.state),
      h('span', { class: 'muted' }, `${d.attempts_log.length} attempt${d.attempts_log.length === 1 ? '' : 's'} logged`), h('span', { class: 'muted' }, when_)),
    d.attempts_log.length
      ? table([
        { label: '#', class: 'num', cell: (a) => a.attempt },
        { label: 'When', cell: (a) => when(a.at) },
        { label: 'Outcome', cell: (a) => badge(a.outcome) },
        { label: 'Status', class: 'num', cell: (a) => a.status ?? '—' },
        { label: 'Duration', class: 'num', cell: (a) => ms(a.duration_ms) },
        { label: 'Answer', class: 'wrap', cell: (a) => a.error ?? a.response ?? '—' },
      ], d.attempts_log)
      : h('p', { class: 'muted' }, 'Not attempted yet.'));
}

// ——— Dead letters ———

export async function deadLetters(ctx) {
  if (ctx.arg) return deadLetter(ctx);
  const { routes } = await get('/v1/admin/routes');
  const f = query(ctx, 'route', 'since');
  const message = h('div');
  ctx.root.append(pageHead('Dead letters', 'Deliveries that ran out of attempts. A replay puts one back in its route\'s queue, due now.'),
    filterForm(ctx, 'dead-letters', [
      field('Route', select('route', routeOptions(routes), f.route)),
      field('Since', input('since', f.since, SINCE_HINT)),
    ]), message);
  const panel = h('section', { class: 'card flush' });
  ctx.root.append(panel);
  const columns = [
    { label: 'Id', class: 'num', cell: (d) => link(`dead-letters/${d.id}`, String(d.id)) },
    { label: 'Route', cell: (d) => d.route },
    { label: 'Event', cell: (d) => link(`event/${seg(d.event_id)}`, h('code', { class: 'clip' }, d.event_id)) },
    { label: 'Type', cell: (d) => d.type },
    { label: 'Subject', cell: (d) => link(`call/${seg(d.subject)}`, d.subject) },
    { label: 'Attempts', class: 'num', cell: (d) => d.attempts },
    { label: 'Dead since', cell: (d) => when(d.dead_at) },
    { label: 'Last error', class: 'wrap', cell: (d) => d.last_error ?? '—' },
    {
      label: '', class: 'actions', cell: (d) => action('Replay', 'small', async (button) => {
        try {
          await post(`/v1/admin/dead-letters/${d.id}/replay`);
          const row = button.closest('tr');
          clear(button.parentElement).append(badge('replayed', 'ok'));
          row.classList.add('done');
          clear(message).append(notice('ok', `Dead letter ${d.id} is back in ${d.route}'s queue.`));
        } catch (e) {
          clear(message).append(errorNotice(e));
        }
      }, `replay-${d.id}`),
    },
  ];
  const page = await get('/v1/admin/dead-letters', f);
  if (page.dead_letters.length) {
    const scope = f.route || f.since ? 'matching' : 'all';
    const all = action(`Replay ${scope === 'all' ? 'all' : 'all matching'}`, 'danger', async () => {
      if (all.dataset.armed !== 'yes') {
        all.dataset.armed = 'yes';
        all.textContent = 'Press again to replay them all';
        return;
      }
      try {
        const r = await post('/v1/admin/dead-letters/replay', { route: f.route, since: f.since, all: scope === 'all' ? 'true' : '' });
        await ctx.refresh(notice('ok', `${r.replayed} dead letter${r.replayed === 1 ? '' : 's'} put back in the queue.`));
      } catch (e) {
        clear(message).append(errorNotice(e));
      }
    }, 'replay-all');
    ctx.root.querySelector('.page-head > div:last-child').append(all);
  }
  panel.append(table(columns, page.dead_letters, 'No dead letters', 'Every delivery got through or is still being tried.', 'dead-letters'));
  const load = async (before) => {
    const next = await get('/v1/admin/dead-letters', { ...f, before_id: before });
    if (next.dead_letters.length) panel.querySelector('tbody').append(...table(columns, next.dead_letters).querySelector('tbody').children);
    const more = pager(next.next_before_id, load);
    if (more) panel.append(more);
  };
  const more = pager(page.next_before_id, load);
  if (more) panel.append(more);
}

async function deadLetter(ctx) {
  const d = await get(`/v1/admin/dead-letters/${seg(ctx.arg)}`);
  const message = h('div');
  ctx.root.append(link('dead-letters', '← Dead letters'));
  ctx.root.lastChild.classList.add('back');
  ctx.root.append(pageHead(`Dead letter ${d.id}`, `${d.route} · ${d.type} · ${d.subject}`,
    action('Replay', 'primary', async () => {
      try {
        await post(`/v1/admin/dead-letters/${d.id}/replay`);
        clear(message).append(notice('ok', 'Back in the queue. '), link(`event/${seg(d.event_id)}`, 'Follow the event'));
      } catch (e) {
        clear(message).append(errorNotice(e));
      }
    }, 'replay')), message,
  h('div', { class: 'grid2' },
    card(h('h2', {}, 'Dead letter'), facts([['Route', d.route], ['Event', link(`event/${seg(d.event_id)}`, d.event_id)],
      ['Type', d.type], ['Subject', d.subject], ['Attempts', d.attempts], ['Dead since', when(d.dead_at)], ['Last error', d.last_error]])),
    card(h('h2', {}, 'Attempts'), table([
      { label: '#', class: 'num', cell: (a) => a.attempt },
      { label: 'When', cell: (a) => when(a.at) },
      { label: 'Status', class: 'num', cell: (a) => a.status ?? '—' },
      { label: 'Duration', class: 'num', cell: (a) => ms(a.duration_ms) },
      { label: 'Answer', class: 'wrap', cell: (a) => a.error ?? a.response ?? '—' },
    ], d.attempts_log, 'No attempts recorded'))),
  card(h('h2', {}, 'CloudEvent'), json(d.event)));
}

// ——— Quarantine ———

export async function quarantine(ctx) {
  if (ctx.arg) return quarantined(ctx);
  const f = query(ctx, 'source', 'since');
  const message = h('div');
  ctx.root.append(pageHead('Quarantine', 'Payloads that were rejected (400, 422), kept with their problems. A replay validates one again: if it passes now, it flows on.'),
    filterForm(ctx, 'quarantine', [
      field('Source', input('source', f.source, 'any source')),
      field('Since', input('since', f.since, SINCE_HINT)),
    ]), message);
  const page = await get('/v1/admin/quarantine', f);
  const columns = [
    { label: 'Id', class: 'num', cell: (q) => link(`quarantine/${q.id}`, String(q.id)) },
    { label: 'Source', cell: (q) => [q.source, h('span', { class: 'sub' }, q.vendor)] },
    { label: 'Received', cell: (q) => when(q.received_at) },
    { label: 'Status', class: 'num', cell: (q) => q.status },
    { label: 'Reason', cell: (q) => h('code', {}, q.reason) },
    { label: 'First problem', class: 'wrap', cell: (q) => problem(q.details) },
    {
      label: '', class: 'actions', cell: (q) => action('Replay', 'small', async (button) => {
        try {
          const r = await post(`/v1/admin/quarantine/${q.id}/replay`);
          const result = r.results[0];
          clear(button.parentElement).append(badge(result.outcome));
          clear(message).append(replayNotice(result));
        } catch (e) {
          clear(message).append(errorNotice(e));
        }
      }, `replay-q-${q.id}`),
    },
  ];
  ctx.root.append(h('section', { class: 'card flush' },
    table(columns, page.quarantine, 'The quarantine is empty', 'Every payload so far was valid.', 'quarantine')));
}

function problem(details) {
  const first = Array.isArray(details) ? details[0] : null;
  if (!first) return '—';
  return [first.path ? h('code', {}, first.path) : null, ' ', first.message ?? '',
    details.length > 1 ? h('span', { class: 'sub' }, `and ${details.length - 1} more`) : null];
}

function replayNotice(result) {
  if (result.outcome === 'rejected') return notice('bad', `Payload ${result.id} was rejected again: ${result.message ?? result.code}. It stays quarantined.`);
  return notice('ok', `Payload ${result.id} ${result.outcome === 'duplicate' ? 'was a duplicate of one accepted before' : 'was accepted'} and left the quarantine.`);
}

async function quarantined(ctx) {
  const q = await get(`/v1/admin/quarantine/${seg(ctx.arg)}`);
  const message = h('div');
  ctx.root.append(link('quarantine', '← Quarantine'));
  ctx.root.lastChild.classList.add('back');
  ctx.root.append(pageHead(`Quarantined payload ${q.id}`, `${q.source} (${q.vendor}) · ${q.status} ${q.reason}`,
    action('Replay', 'primary', async () => {
      try {
        const r = await post(`/v1/admin/quarantine/${q.id}/replay`);
        clear(message).append(replayNotice(r.results[0]));
      } catch (e) {
        clear(message).append(errorNotice(e));
      }
    }, 'replay')), message,
  card(h('h2', {}, 'Problems'), table([
    { label: 'Where', cell: (p) => h('code', {}, p.path ?? '') },
    { label: 'Problem', class: 'wrap', cell: (p) => p.message ?? '' },
  ], Array.isArray(q.details) ? q.details : [], 'No problem listed')),
  card(h('h2', {}, 'Body as received'), h('pre', { class: 'json' }, pretty(q.body ?? ''))));
}

/** A body as received: indented when it is JSON, else as it came. */
function pretty(text) {
  try {
    return JSON.stringify(JSON.parse(text), null, 2);
  } catch {
    return text;
  }
}

// ——— Calls ———

const STATUSES = ['in_progress', 'completed', 'no_answer', 'busy', 'canceled', 'failed'];

export async function calls(ctx) {
  const f = query(ctx, 'source', 'status', 'since');
  ctx.root.append(pageHead('Calls', 'One record per call, merged from its events, newest first.'),
    filterForm(ctx, 'calls', [
      field('Source', input('source', f.source, 'any source')),
      field('Status', select('status', [['', 'Any status'], ...STATUSES.map((s) => [s, s.replace('_', ' ')])], f.status)),
      field('Since', input('since', f.since, SINCE_HINT)),
    ]));
  const panel = h('section', { class: 'card flush' });
  ctx.root.append(panel);
  const columns = [
    { label: 'Subject', cell: (c) => link(`call/${seg(c.subject)}`, c.subject) },
    { label: 'Source', cell: (c) => c.source },
    { label: 'Status', cell: (c) => badge(c.status ?? 'in_progress', c.status === 'completed' ? 'ok' : c.status ? 'warn' : 'info') },
    { label: 'Events', class: 'num', cell: (c) => c.events },
    { label: 'Completed', cell: (c) => when(c.completed_at) },
    { label: 'First event', cell: (c) => when(c.first_at) },
    { label: 'Latest event', cell: (c) => when(c.last_at) },
  ];
  const load = async (before) => {
    const page = await get('/v1/calls', { ...f, before_id: before });
    if (before && page.calls.length) panel.querySelector('tbody').append(...table(columns, page.calls).querySelector('tbody').children);
    else if (!before) panel.append(table(columns, page.calls, 'No calls', 'No call matches these filters.', 'calls'));
    const more = pager(page.next_before_id, load);
    if (more) panel.append(more);
  };
  await load(null);
}

export async function call(ctx) {
  const c = await get(`/v1/calls/${seg(ctx.arg)}`);
  const r = c.record ?? {};
  ctx.root.append(link('calls', '← Calls'));
  ctx.root.lastChild.classList.add('back');
  ctx.root.append(pageHead(c.subject, `${c.summary.events} event${c.summary.events === 1 ? '' : 's'} from ${c.summary.source}`,
    action('Refresh', '', () => ctx.refresh())),
  h('div', { class: 'grid2' },
    card(h('h2', {}, 'Call'), facts([
      ['Status', badge(c.summary.status ?? 'in_progress', c.summary.status === 'completed' ? 'ok' : 'info')],
      ['Phase', r.phase], ['Direction', r.direction], ['From', r.from], ['To', r.to], ['Agent', r.agent_id],
      ['Started', r.started_at], ['Connected', r.connected_at], ['Ended', r.ended_at],
      ['Duration', r.duration_ms === null || r.duration_ms === undefined ? null : ms(r.duration_ms)],
      ['First event', when(c.summary.first_at)], ['Latest event', when(c.summary.last_at)],
      ['Completed', c.summary.completed_at
        ? h('span', { 'data-testid': 'call-completed' }, when(c.summary.completed_at))
        : h('span', { 'data-testid': 'call-completed', class: 'muted' }, c.summary.terminal_at ? 'settling' : 'not ended')],
      (c.summary.late ?? []).length
        ? ['Late pieces', h('span', { 'data-testid': 'call-late' }, c.summary.late.flatMap((k) => [badge(k, 'warn'), ' ']))]
        : null,
      c.unreadable_events ? ['Unreadable events', String(c.unreadable_events)] : null,
    ])),
    card(h('h2', {}, 'Routes'), table([
      { label: 'Route', cell: (r) => r.route },
      { label: 'Delivered', class: 'num', cell: (r) => r.delivered },
      { label: 'Waiting', class: 'num', cell: (r) => r.pending + r.retrying + r.in_flight },
      { label: 'Dead', class: 'num', cell: (r) => (r.dead ? badge(String(r.dead), 'bad') : '0') },
    ], c.routes, 'No route', 'No route was subscribed to this call\'s events.'))),
  card(h('h2', {}, 'Events'), table([
    { label: 'Event', cell: (e) => (e.id ? link(`event/${seg(e.id)}`, h('code', { class: 'clip' }, e.id)) : '—') },
    { label: 'Type', cell: (e) => e.type ?? '—' },
    { label: 'Time', cell: (e) => when(e.time) },
    {
      label: 'Deliveries', cell: (e) => c.routes.flatMap((r) => r.deliveries.filter((d) => d.event_id === e.id)
        .map((d) => h('span', {}, `${r.route} `, badge(d.state), ' '))),
    },
  ], c.events.filter((e) => typeof e === 'object'), 'No events')),
  card(h('h2', {}, 'Merged record'), c.record ? json(c.record) : emptyState('No record', 'None of its events could be read.')));
}

// ——— Live tail ———

export async function tail(ctx) {
  const { routes } = await get('/v1/admin/routes');
  const state = tailState();
  const status = h('div', { class: 'tail-status' });
  const route = select('route', routeOptions(routes.filter((r) => r.configured)), state.filters.route);
  const source = input('source', state.filters.source, 'any source');
  const type = input('type', state.filters.type, 'call.* or call.ended');
  const toggle = h('button', { type: 'submit', class: 'primary', 'data-testid': 'tail-toggle' });
  const form = h('form', { class: 'filters', method: 'post' }, field('Route', route), field('Source', source),
    field('Type', type), toggle, action('Clear', '', () => clearTail()));
  const body = h('tbody');
  const list = h('table', { class: 'tail-list', 'data-testid': 'tail' },
    h('thead', {}, h('tr', {}, ['Seen', 'Kind', 'Type', 'Subject', 'Route', 'Outcome', 'Status', 'Duration', 'Event'].map((l) => h('th', {}, l)))),
    body);
  const empty = emptyState('Nothing yet', 'Accepted events and delivery outcomes appear here as they happen.');
  const panel = h('section', { class: 'card flush' }, list, empty);
  const row = (m, fresh) => {
    const d = m.data;
    const outcome = m.kind === 'outcome';
    return h('tr', { class: fresh ? 'fresh' : '' },
      h('td', {}, when(m.seen)),
      h('td', {}, badge(m.kind === 'accepted' ? 'accepted' : 'outcome', outcome ? 'neutral' : 'info')),
      h('td', {}, d.type ?? '—'),
      h('td', {}, d.subject ? link(`call/${seg(d.subject)}`, d.subject) : '—'),
      h('td', {}, outcome ? d.route : (d.routes ?? []).join(', ') || '—'),
      h('td', {}, outcome ? [badge(d.outcome), d.attempt > 1 ? h('span', { class: 'sub' }, `attempt ${d.attempt}`) : null] : '—'),
      h('td', { class: 'num' }, outcome ? (d.status ?? d.error ?? '—') : '—'),
      h('td', { class: 'num' }, outcome ? ms(d.duration_ms) : '—'),
      h('td', {}, d.id || d.event_id ? link(`event/${seg(d.id ?? d.event_id)}`, h('code', { class: 'clip' }, d.id ?? d.event_id)) : '—'));
  };
  const paint = (message) => {
    toggle.textContent = state.running ? 'Stop' : 'Start';
    clear(status).append(notice(state.status.tone, state.status.text));
    if (message) {
      body.prepend(row(message, true));
      while (body.children.length > state.messages.length) body.lastChild.remove();
    } else {
      clear(body).append(...state.messages.map((m) => row(m, false)));
    }
    empty.hidden = state.messages.length > 0;
    list.hidden = state.messages.length === 0;
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (state.running) {
      stopTail();
      return;
    }
    try {
      await startTail({ route: route.value, source: source.value.trim(), type: type.value.trim() });
    } catch (err) {
      clear(status).append(errorNotice(err));
    }
  });
  ctx.root.append(pageHead('Live tail', 'Events as they are accepted and delivery outcomes as they are recorded (summaries only: no event data). The stream keeps running while you look at other pages.'),
    form, status, panel);
  paint();
  ctx.cleanup(onTail(paint));
}
