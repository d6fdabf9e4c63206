// The dashboard's shell: sign-in, the views by address (`#/view/arg?filters`; never the
// token), and a 401 from any call sending the operator back to the sign-in form.

import { clearToken, get, setToken, token } from './api.js';
import { clear, errorNotice, h } from './dom.js';
import { stopTail } from './tail.js';
import * as views from './views.js';

const VIEWS = {
  overview: views.overview,
  deliveries: views.deliveries,
  event: views.event,
  'dead-letters': views.deadLetters,
  quarantine: views.quarantine,
  calls: views.calls,
  call: views.call,
  tail: views.tail,
};

const main = document.getElementById('main');
const nav = document.getElementById('nav');
const signout = document.getElementById('signout');
let cleanups = [];
let generation = 0;
/** A notice to show once on the next rendering (what an action that re-rendered did). */
let flash = null;

function parse() {
  const hash = location.hash.replace(/^#\/?/, '');
  const [path, q = ''] = hash.split('?');
  const [name, ...rest] = path.split('/');
  let arg = rest.join('/');
  try {
    arg = decodeURIComponent(arg);
  } catch {
    // left as written
  }
  return { name: VIEWS[name] ? name : 'overview', arg, query: new URLSearchParams(q) };
}

function go(hash) {
  const next = `#/${hash}`;
  if (location.hash === next) render();
  else location.hash = next;
}

async function render() {
  if (!token()) return showLogin();
  for (const cleanup of cleanups) cleanup();
  cleanups = [];
  const mine = ++generation;
  const { name, arg, query } = parse();
  nav.hidden = false;
  signout.hidden = false;
  for (const a of nav.querySelectorAll('a')) {
    const active = a.dataset.view === name || (name === 'call' && a.dataset.view === 'calls');
    a.classList.toggle('active', active);
  }
  const root = h('div', { class: 'view', 'data-view': name });
  const loading = h('p', { class: 'loading' }, 'Loading…');
  clear(main).append(loading);
  const ctx = {
    root, arg, query, go,
    refresh: (note) => {
      flash = note instanceof Node ? note : null;
      return render();
    },
    cleanup: (fn) => cleanups.push(fn),
  };
  try {
    await VIEWS[name](ctx);
  } catch (e) {
    if (e.status === 401) return;
    root.append(errorNotice(e));
  }
  if (mine !== generation) return;
  if (flash) {
    root.firstElementChild?.after(flash);
    flash = null;
  }
  clear(main).append(root);
  root.dataset.ready = 'yes';
}

function showLogin(message) {
  stopTail();
  nav.hidden = true;
  signout.hidden = true;
  const form = document.getElementById('login-template').content.firstElementChild.cloneNode(true);
  clear(main).append(form);
  const error = form.querySelector('#login-error');
  if (message) {
    error.textContent = message;
    error.hidden = false;
  }
  const input = form.querySelector('#token');
  input.focus();
  form.querySelector('form').addEventListener('submit', async (e) => {
    e.preventDefault();
    const value = input.value.trim();
    if (!value) return;
    setToken(value);
    try {
      await get('/v1/admin/routes');
    } catch (err) {
      if (err.status === 401) return; // the unauthorized handler shows the form again
      clearToken();
      error.textContent = err.status === 403 ? 'The admin API is off: this gateway has no [admin] token.' : err.message;
      error.hidden = false;
      return;
    }
    render();
  });
}

window.addEventListener('callgate:unauthorized', () => {
  const had = token();
  clearToken();
  showLogin(had ? 'The gateway refused that token. Enter the current admin token.' : undefined);
});

signout.addEventListener('click', () => {
  clearToken();
  location.hash = '#/overview';
  showLogin();
});

window.addEventListener('hashchange', render);
render();
