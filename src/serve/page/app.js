// latentface studio: the page's behaviour. Plain JavaScript, no libraries; every call
// goes to this server's JSON API (/api/openapi.json describes it).
'use strict';

const $ = (sel, root = document) => root.querySelector(sel);
const state = {
  health: null,
  parents: { a: null, b: null },
  children: [],
  rendering: false,
  pending: false,
  pendingFigures: false,
  morphKeys: new Set(), // child ids ticked for the morph
  edit: { busy: false, pending: false, pendingFigures: false, last: null },
};

async function api(path, options) {
  const r = await fetch(path, options);
  if (!r.ok) {
    let msg = `${r.status} ${r.statusText}`;
    try {
      const j = await r.json();
      if (j.error) msg = j.error;
    } catch (_) { /* not JSON */ }
    const e = new Error(msg);
    e.status = r.status;
    throw e;
  }
  return r;
}

const png = (b64) => `data:image/png;base64,${b64}`;
const fmt = (v, d = 2) => (v === null || v === undefined ? 'n/a' : Number(v).toFixed(d));
const sex = (female) => (female > 0.5 ? 'F' : 'M');

function show(el, on) { el.hidden = !on; }
function setError(el, msg) { el.textContent = msg || ''; show(el, !!msg); }

// ---------------------------------------------------------------------------------------
// Parents

function parentEl(slot) { return $(`#parent-${slot}`); }

// Inverts photos into parent slots: `items` is [{slot, file, name}], one or two. Two go in
// one request, which the server inverts as one batch (B=2): faster than one after the other.
async function invertInto(items) {
  const parts = items.map(({ slot, name }) => {
    const root = parentEl(slot);
    setError($('.error', root), '');
    show($('.result', root), false);
    show($('.busy', root), true);
    $('progress', root).removeAttribute('value'); // indeterminate until the job reports steps
    return { root, text: $('.busy-text', root), bar: $('progress', root), name };
  });
  const label = items.map((i) => i.name).join(' and ');
  const t0 = performance.now();
  const secs = () => ((performance.now() - t0) / 1000).toFixed(1);
  const say = (msg) => { for (const p of parts) p.text.textContent = msg; };
  const timer = setInterval(() => say(`aligning and inverting ${label}… ${secs()} s`), 100);
  try {
    const form = new FormData();
    for (const { file, name } of items) form.append('photo', file, name);
    if ($('#steps').value) form.append('options', JSON.stringify({ steps: Number($('#steps').value) }));
    form.append('job', 'true');
    const r = await api('/api/invert', { method: 'POST', body: form });
    let j = await r.json();
    if (r.status === 202) {
      // A job: poll it for the optimisation steps, then take its answer.
      clearInterval(timer);
      for (;;) {
        const st = await (await api(j.status)).json();
        say(st.state === 'queued'
          ? `${label}: waiting for the inverter… ${secs()} s`
          : `inverting ${label}: step ${st.done} of ${st.total} · ${secs()} s`);
        for (const p of parts) { p.bar.max = Math.max(1, st.total); p.bar.value = st.done; }
        if (st.state === 'done') { j = st.report; break; }
        if (st.state !== 'queued' && st.state !== 'running') throw new Error(st.error || `inversion ${st.state}`);
        await new Promise((res) => setTimeout(res, 200));
      }
    }
    items.forEach(({ slot }, k) => {
      const lat = j.latents[k];
      const root = parts[k].root;
      state.parents[slot] = lat;
      $('.crop', root).src = png(lat.crop || lat.image);
      $('.recon', root).src = png(lat.image);
      $('.figures', root).replaceChildren(...parentFigures(lat, (performance.now() - t0) / 1000));
      show($('.result', root), true);
      root.dataset.ready = 'true';
    });
    updateMorphKeys();
    updateEditSources();
    render();
  } catch (e) {
    for (const [k, { slot }] of items.entries()) {
      state.parents[slot] = null;
      parts[k].root.dataset.ready = 'false';
      setError($('.error', parts[k].root), e.message);
    }
    updateEditSources();
  } finally {
    clearInterval(timer);
    for (const p of parts) show($('.busy', p.root), false);
  }
}

const invert = (slot, file, name) => invertInto([{ slot, file, name }]);

async function sampleBlob(name) {
  return (await api(`/samples/${encodeURIComponent(name)}`)).blob();
}

function wirePair() {
  const input = $('#file-pair');
  input.addEventListener('change', () => {
    const f = [...input.files];
    if (f.length !== 2) {
      setError($('#pair-error'), `choose two photos (${f.length} chosen), or drop one on each parent`);
      return;
    }
    setError($('#pair-error'), '');
    invertInto([{ slot: 'a', file: f[0], name: f[0].name }, { slot: 'b', file: f[1], name: f[1].name }]);
  });
  $('#use-samples').addEventListener('click', async () => {
    const [na, nb] = [$('#sample-a').value, $('#sample-b').value];
    try {
      const [fa, fb] = await Promise.all([sampleBlob(na), sampleBlob(nb)]);
      setError($('#pair-error'), '');
      invertInto([{ slot: 'a', file: fa, name: na }, { slot: 'b', file: fb, name: nb }]);
    } catch (e) {
      setError($('#pair-error'), e.message);
    }
  });
}

function li(text, cls) {
  const el = document.createElement('li');
  el.textContent = text;
  if (cls) el.className = cls;
  return el;
}

function parentFigures(lat, seconds) {
  const r = lat.report || {};
  const out = [];
  out.push(li(`PSNR ${fmt(r.psnr_db, 1)} dB · SSIM ${fmt(r.ssim, 3)} · LPIPS ${fmt(r.lpips, 3)}`));
  const f = r.face;
  if (f) {
    out.push(li(`identity distance ${fmt(f.identity_distance)} — ${f.same_person ? 'same person' : 'NOT the same person'}`,
      f.same_person ? 'good' : 'bad'));
    out.push(li(`age ${fmt(f.age_photo, 0)} y → ${fmt(f.age_result, 0)} y · gender ${sex(f.female_photo)} → ${sex(f.female_result)}${f.gender_flipped ? ' (flipped)' : ''}`));
  }
  out.push(li(`${r.steps_run ?? '?'} steps, ${fmt(seconds, 1)} s${r.early_stopped ? ' (plateau)' : ''}`, 'muted'));
  return out;
}

function wireParent(slot) {
  const root = parentEl(slot);
  const input = $('.file', root);
  input.addEventListener('change', () => {
    if (input.files[0]) invert(slot, input.files[0], input.files[0].name);
  });
  const drop = $('.drop', root);
  drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (e) => {
    e.preventDefault();
    drop.classList.remove('over');
    const f = [...e.dataTransfer.files];
    // Two photos dropped at once: both parents, in one batch.
    if (f.length >= 2) invertInto([{ slot: 'a', file: f[0], name: f[0].name }, { slot: 'b', file: f[1], name: f[1].name }]);
    else if (f[0]) invert(slot, f[0], f[0].name);
  });
  $('.use-sample', root).addEventListener('click', async () => {
    const name = $('.sample', root).value;
    try {
      invert(slot, await sampleBlob(name), name);
    } catch (e) {
      setError($('.error', root), e.message);
    }
  });
}

// ---------------------------------------------------------------------------------------
// Family

const sliders = ['mix', 'coarse', 'middle', 'fine', 'children', 'diversity', 'mutation'];

function familyBody() {
  const body = {
    parent_a: state.parents.a.id,
    parent_b: state.parents.b.id,
    mix: Number($('#mix').value),
    children: Number($('#children').value),
    diversity: Number($('#diversity').value),
    mutation: Number($('#mutation').value),
    crossover: $('#crossover').checked,
    seed: Math.max(0, Math.floor(Number($('#seed').value) || 0)),
  };
  for (const g of ['coarse', 'middle', 'fine']) {
    if ($(`#own-${g}`).checked) body[g] = Number($(`#${g}`).value);
  }
  for (const d of ['age', 'gender']) {
    if ($(`#${d}`).value) body[d] = $(`#${d}`).value;
  }
  return body;
}

// Re-renders as controls move: one request at a time, the latest settings win. While a
// slider moves only the pictures are asked for (milliseconds); the resemblance figures
// (the face judge, several times slower) come when it is let go.
async function render(figures = true) {
  if (!state.parents.a || !state.parents.b) return;
  if (state.rendering) {
    state.pending = true;
    state.pendingFigures = state.pendingFigures || figures;
    return;
  }
  state.rendering = true;
  const t0 = performance.now();
  try {
    const r = await api('/api/family', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ ...familyBody(), figures }),
    });
    const j = await r.json();
    setError($('#family-error'), '');
    showChildren(j);
    $('#render-ms').textContent = `rendered in ${(performance.now() - t0).toFixed(0)} ms (server ${j.ms.total.toFixed(0)} ms)`;
  } catch (e) {
    setError($('#family-error'), e.message);
  } finally {
    state.rendering = false;
    if (state.pending) {
      const f = state.pendingFigures;
      state.pending = false;
      state.pendingFigures = false;
      render(f);
    }
  }
}

function showChildren(j) {
  state.children = j.children;
  show($('#family-hint'), false);
  $('#sheet').disabled = false;
  const f = j.faces;
  document.body.dataset.figures = f ? 'true' : 'false';
  $('#family-figures').textContent = f
    ? `parents' identity distance ${fmt(f.parents_distance)}` +
      (f.sibling_distance_mean !== null ? ` · siblings' mean distance ${fmt(f.sibling_distance_mean)}` : '')
    : (j.face_note === 'figures not asked for' ? 'resemblance figures when the slider stops…' : (j.face_note || ''));
  const cards = j.children.map((c) => {
    const card = document.createElement('figure');
    card.className = 'child';
    card.dataset.id = c.id;
    const img = document.createElement('img');
    img.src = png(c.image);
    img.alt = `child ${c.index}`;
    card.append(img);
    const cap = document.createElement('figcaption');
    const face = c.face;
    let text = `child ${c.index}${c.mutated ? ' (mutated)' : ''}`;
    if (face) {
      const sibs = Object.values(face.distance_siblings);
      const sib = sibs.length ? ` · sib ${fmt(sibs.reduce((a, b) => a + b, 0) / sibs.length)}` : '';
      text += `\nto A ${fmt(face.distance_a)} · to B ${fmt(face.distance_b)}${sib}\n${fmt(face.age, 0)} y · ${sex(face.female)}`;
    }
    cap.textContent = text;
    card.append(cap);
    const links = document.createElement('div');
    links.className = 'links';
    const a1 = document.createElement('a');
    a1.href = `/api/latents/${c.id}/image.png`;
    a1.download = `child_${c.index}.png`;
    a1.textContent = 'PNG';
    const a2 = document.createElement('a');
    a2.href = `/api/latents/${c.id}/latent.npy`;
    a2.download = `child_${c.index}.npy`;
    a2.textContent = 'latent';
    const key = document.createElement('label');
    const box = document.createElement('input');
    box.type = 'checkbox';
    box.className = 'morph-key';
    box.addEventListener('change', () => {
      if (box.checked) state.morphKeys.add(c.id); else state.morphKeys.delete(c.id);
      updateMorphKeys();
    });
    key.append(box, ' morph key');
    links.append(a1, ' · ', a2, ' · ', key);
    card.append(links);
    return card;
  });
  $('#children-grid').replaceChildren(...cards);
  // Ticked children are replaced by new ones on every render.
  state.morphKeys.clear();
  updateMorphKeys();
  updateEditSources();
}

async function familySheet() {
  const btn = $('#sheet');
  btn.disabled = true;
  btn.textContent = 'making the family sheet…';
  try {
    const r = await api('/api/family/sheet', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(familyBody()),
    });
    const url = URL.createObjectURL(await r.blob());
    $('#sheet-img').src = url;
    show($('#sheet-img'), true);
    $('#sheet-download').href = url;
    show($('#sheet-download'), true);
  } catch (e) {
    setError($('#family-error'), e.message);
  } finally {
    btn.disabled = false;
    btn.textContent = 'family sheet (PNG)';
  }
}

// ---------------------------------------------------------------------------------------
// Edit: one face moved along the bundle's directions (POST /api/edit, the `edit` job's
// stages in memory). Re-renders as a slider moves, one request at a time, the latest
// settings winning; the judged figures come when it is let go.

function editSources() {
  const out = [];
  for (const slot of ['a', 'b']) {
    const p = state.parents[slot];
    if (p) out.push({ key: slot, id: p.id, label: `parent ${slot.toUpperCase()} (${p.label})`, image: p.image });
  }
  for (const c of state.children) out.push({ key: `child-${c.index}`, id: c.id, label: `child ${c.index}`, image: c.image });
  return out;
}

function updateEditSources() {
  const sel = $('#edit-source');
  const keep = sel.value;
  const list = editSources();
  sel.replaceChildren(...list.map((f) => new Option(f.label, f.key)));
  if (list.some((f) => f.key === keep)) sel.value = keep;
  const now = list.find((f) => f.key === sel.value);
  const had = sel.dataset.id;
  sel.dataset.id = now ? now.id : '';
  // The face under edit changed (a new parent, or children re-rendered): edit it again.
  if (now && now.id !== had) renderEdit(true);
  if (!now) $('#edit-before').removeAttribute('src');
}

function editBody() {
  const dir = {};
  for (const el of document.querySelectorAll('#edit-sliders input[type=range]')) {
    const v = Number(el.value);
    if (v !== 0) dir[el.dataset.direction] = v;
  }
  return dir;
}

async function renderEdit(figures = true) {
  const src = editSources().find((f) => f.key === $('#edit-source').value);
  if (!src) return;
  const ed = state.edit;
  if (ed.busy) {
    ed.pending = true;
    ed.pendingFigures = ed.pendingFigures || figures;
    return;
  }
  $('#edit-before').src = png(src.image);
  const dir = editBody();
  if (Object.keys(dir).length === 0) {
    // Nothing to edit: the face as it is.
    $('#edit-after').src = png(src.image);
    $('#edit-figures').replaceChildren(li('move a slider to edit this face', 'muted'));
    show($('#edit-png'), false);
    show($('#edit-npy'), false);
    document.body.dataset.edit = 'none';
    return;
  }
  ed.busy = true;
  const t0 = performance.now();
  try {
    const r = await api('/api/edit', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ input: src.id, dir, figures }),
    });
    const j = await r.json();
    ed.last = j;
    setError($('#edit-error'), '');
    $('#edit-after').src = png(j.image);
    const items = [];
    const f = j.face;
    const i = j.input || {};
    if (f) {
      const photo = i.reconstruction_distance !== null && i.reconstruction_distance !== undefined;
      const to = photo ? 'the photo' : 'the face before';
      const u = j.unedited || {};
      const ph = (v, d, unit = '') => (photo ? `, photo ${fmt(v, d)}${unit}` : '');
      items.push(li(`judged age ${fmt(f.age, 0)} y (before ${fmt(u.age, 0)} y${ph(i.age, 0, ' y')}) · gender ${sex(f.female)} (p woman ${fmt(f.female)}, before ${fmt(u.female)}${ph(i.female, 2)})`));
      items.push(li(`identity distance ${fmt(f.identity_distance)} to ${to} — ${f.identity_distance < 0.6 ? 'same person' : 'NOT the same person'}`,
        f.identity_distance < 0.6 ? 'good' : 'bad'));
      items.push(li(`distance to the unedited render ${fmt(f.distance_unedited)}`, 'muted'));
    } else {
      items.push(li(j.face_note === 'figures not asked for' ? 'figures when the slider stops…' : (j.face_note || ''), 'muted'));
    }
    $('#edit-figures').replaceChildren(...items);
    const name = `${src.key}_edited`;
    const a1 = $('#edit-png');
    a1.href = `/api/latents/${j.id}/image.png`;
    a1.download = `${name}.png`;
    const a2 = $('#edit-npy');
    a2.href = `/api/latents/${j.id}/latent.npy`;
    a2.download = `${name}.npy`;
    show(a1, true);
    show(a2, true);
    document.body.dataset.edit = f ? 'figures' : 'picture';
    $('#edit-after').dataset.dir = JSON.stringify(dir); // the settings shown (tests wait on it)
    $('#edit-ms').textContent = `rendered in ${(performance.now() - t0).toFixed(0)} ms (server ${j.ms.total.toFixed(0)} ms)`;
  } catch (e) {
    setError($('#edit-error'), e.message);
  } finally {
    ed.busy = false;
    if (ed.pending) {
      const pf = ed.pendingFigures;
      ed.pending = false;
      ed.pendingFigures = false;
      renderEdit(pf);
    }
  }
}

function buildEditSliders(h) {
  const box = $('#edit-sliders');
  const max = Math.min(3, h.bundle.max_edit_strength || 3);
  const rows = [];
  // pc2 before pc10: names compared with their numbers as numbers.
  const named = Object.entries(h.bundle.direction_words || {})
    .sort(([a], [b]) => a.localeCompare(b, undefined, { numeric: true }));
  for (const [name, words] of named) {
    const label = document.createElement('label');
    const input = document.createElement('input');
    Object.assign(input, { type: 'range', min: -max, max, step: 0.1, value: 0, id: `edit-${name}` });
    input.dataset.direction = name;
    const out = document.createElement('output');
    out.htmlFor = input.id;
    out.textContent = '0';
    label.append(name, input, out);
    const w = document.createElement('div');
    w.className = 'words';
    w.textContent = words;
    input.addEventListener('input', () => { out.textContent = Number(input.value).toFixed(1); renderEdit(false); });
    input.addEventListener('change', () => renderEdit(true));
    rows.push(label, w);
  }
  box.replaceChildren(...rows);
  if (!rows.length) box.textContent = 'this model has no directions to edit along';
}

// ---------------------------------------------------------------------------------------
// Morph

function morphKeyList() {
  const keys = [];
  if (state.parents.a) keys.push({ id: state.parents.a.id, label: `parent A (${state.parents.a.label})` });
  for (const c of state.children) {
    if (state.morphKeys.has(c.id)) keys.push({ id: c.id, label: `child ${c.index}` });
  }
  if (state.parents.b) keys.push({ id: state.parents.b.id, label: `parent B (${state.parents.b.label})` });
  return keys;
}

function updateMorphKeys() {
  const keys = morphKeyList();
  $('#morph-keys').replaceChildren(...keys.map((k) => li(k.label)));
  $('#morph-render').disabled = keys.length < 2;
}

async function renderMorph() {
  const keys = morphKeyList();
  const btn = $('#morph-render');
  const bar = $('#morph-progress');
  const status = $('#morph-status');
  const format = $('#format').value;
  setError($('#morph-error'), '');
  btn.disabled = true;
  bar.value = 0;
  show(bar, true);
  status.textContent = 'queued…';
  try {
    const r = await api('/api/morph', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        keys: keys.map((k) => k.id),
        interp: $('#interp').value,
        easing: $('#easing').value,
        frames_per_key: Number($('#frames').value),
        fps: Number($('#fps').value),
        loop: $('#loop').checked,
        size: $('#size').value ? Number($('#size').value) : null,
        format,
      }),
    });
    const job = await r.json();
    let s;
    for (;;) {
      s = await (await api(job.status)).json();
      bar.max = Math.max(1, s.total);
      bar.value = s.done;
      status.textContent = `${s.state}: ${s.done}/${s.total} frames`;
      if (s.state !== 'queued' && s.state !== 'running') break;
      await new Promise((res) => setTimeout(res, 250));
    }
    if (s.state !== 'done') throw new Error(s.error || `the morph ${s.state}`);
    const blob = await (await api(job.result)).blob();
    const url = URL.createObjectURL(blob);
    const gif = $('#morph-gif');
    const video = $('#morph-video');
    show(gif, format === 'gif');
    show(video, format === 'mp4');
    if (format === 'gif') gif.src = url; else video.src = url;
    const dl = $('#morph-download');
    dl.href = url;
    dl.download = `morph.${format}`;
    dl.textContent = `download morph.${format} (${(blob.size / 1024).toFixed(0)} kB, ${s.report.frames} frames)`;
    show($('#morph-result'), true);
    status.textContent = `done in ${fmt(s.seconds, 1)} s`;
  } catch (e) {
    setError($('#morph-error'), e.message);
    status.textContent = '';
  } finally {
    btn.disabled = morphKeyList().length < 2;
  }
}

// ---------------------------------------------------------------------------------------
// Start

function wireControls() {
  for (const id of sliders) {
    const el = $(`#${id}`);
    const out = $(`output[for="${id}"]`);
    const sync = () => { if (out) out.textContent = el.value; };
    sync();
    el.addEventListener('input', () => { sync(); render(false); });
    el.addEventListener('change', () => render(true));
  }
  for (const g of ['coarse', 'middle', 'fine']) {
    $(`#own-${g}`).addEventListener('change', (e) => {
      $(`#${g}`).disabled = !e.target.checked;
      render();
    });
  }
  for (const id of ['age', 'gender', 'crossover', 'seed']) {
    $(`#${id}`).addEventListener('change', render);
  }
  $('#reseed').addEventListener('click', () => {
    $('#seed').value = Math.floor(Math.random() * 1e6);
    render();
  });
  $('#sheet').addEventListener('click', familySheet);
  $('#edit-source').addEventListener('change', () => updateEditSources());
  $('#edit-reset').addEventListener('click', () => {
    for (const el of document.querySelectorAll('#edit-sliders input[type=range]')) {
      el.value = 0;
      $(`output[for="${el.id}"]`).textContent = '0';
    }
    renderEdit(true);
  });
  $('#morph-render').addEventListener('click', renderMorph);
}

async function start() {
  $('#origin').textContent = location.host;
  wireParent('a');
  wireParent('b');
  wirePair();
  wireControls();
  try {
    const h = await (await api('/api/health')).json();
    state.health = h;
    $('#server-status').textContent = `model ${h.bundle.name} · ${h.execution_provider}`;
    $('#steps option[value=""]').textContent = `quick (${h.default_steps} steps)`;
    $('#version').textContent = h.version;
    $('#bundle-name').textContent = h.bundle.name;
    for (const slot of ['a', 'b']) {
      const sel = $(`#sample-${slot}`);
      sel.replaceChildren(...h.samples.map((n) => new Option(n.replace(/\.png$/, ''), n)));
    }
    if (h.samples.length > 1) $('#sample-b').selectedIndex = 1;
    for (const d of ['age', 'gender']) {
      for (const g of h.bundle.directions[d] || []) $(`#${d}`).append(new Option(g, g));
      $(`#${d}`).disabled = !h.bundle.directions[d];
    }
    for (const g of ['coarse', 'middle', 'fine']) {
      if (!h.bundle.layers.includes(g)) $(`#own-${g}`).disabled = true;
    }
    buildEditSliders(h);
    document.body.dataset.ready = 'true';
  } catch (e) {
    $('#server-status').textContent = `server not reachable: ${e.message}`;
  }
}

document.addEventListener('DOMContentLoaded', start);
