// The studio page in Debian's headless Chromium, driven by playwright-core.
// Run by scripts/browser_test.sh, which starts `latentface serve` and sets:
//   LATENTFACE_URL   the server's base URL
//   ARTIFACTS        where screenshots and downloads go
//   SAMPLES          the repository's samples/ folder
//   SCREENSHOT_ONLY  (optional) a path: only load two samples and save one full-page screenshot
import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const url = process.env.LATENTFACE_URL;
const artifacts = process.env.ARTIFACTS;
const samples = process.env.SAMPLES;
const shotOnly = process.env.SCREENSHOT_ONLY;
assert.ok(url && artifacts && samples, 'LATENTFACE_URL, ARTIFACTS and SAMPLES must be set');
fs.mkdirSync(artifacts, { recursive: true });
const shot = (page, name) => page.screenshot({ path: path.join(artifacts, name), fullPage: true });

async function withPage(fn) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    // Root in CI: Chromium's sandbox needs user namespaces it may not have there.
    args: ['--no-sandbox'],
  });
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1100, height: 900 } });
  const page = await context.newPage();
  const errors = [];
  page.on('pageerror', (e) => errors.push(String(e)));
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  try {
    await fn(page, errors);
  } catch (e) {
    await shot(page, 'failure.png').catch(() => {});
    throw e;
  } finally {
    await browser.close();
  }
}

async function loadParents(page) {
  await page.goto(url);
  await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
  // Both parents from the bundled samples in one request (one batch on the server).
  await page.selectOption('#sample-a', 'alice.png');
  await page.selectOption('#sample-b', 'carol.png');
  await page.click('#use-samples');
  for (const slot of ['a', 'b']) {
    await page.waitForSelector(`#parent-${slot}[data-ready="true"]`, { timeout: 120_000 });
  }
  // Four children with their resemblance figures.
  await page.waitForFunction(() => document.querySelectorAll('#children-grid .child').length === 4
    && document.body.dataset.figures === 'true', null, { timeout: 60_000 });
}

// Moves the edit panel's `age` slider with the keyboard and waits for the edited face
// and its figures; returns the edited picture's data URL.
async function editAge(page, presses) {
  await page.focus('#edit-age');
  for (let i = 0; i < presses; i++) await page.keyboard.press('ArrowRight');
  // The face shown is the one for the slider's final value, with its figures.
  const want = JSON.stringify({ age: Number(await page.inputValue('#edit-age')) });
  await page.waitForFunction((w) => document.querySelector('#edit-after').dataset.dir === w
    && document.body.dataset.edit === 'figures', want, { timeout: 60_000 });
  return page.getAttribute('#edit-after', 'src');
}

if (shotOnly) {
  test('screenshot for the README', async () => {
    await withPage(async (page) => {
      await loadParents(page);
      await editAge(page, 15);
      await page.screenshot({ path: shotOnly, fullPage: true });
    });
  });
} else {
  test('the studio: two photos -> children -> slider -> edit -> morph', async () => {
    await withPage(async (page, errors) => {
      await page.goto(url);
      await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
      assert.match(await page.textContent('#privacy'), /deleted when it stops/);
      assert.equal(await page.locator('#sample-a option').count(), 6);
      await shot(page, '01-loaded.png');

      await loadParents(page);
      for (const slot of ['a', 'b']) {
        const figures = await page.textContent(`#parent-${slot} .figures`);
        assert.match(figures, /PSNR [0-9.]+ dB/);
        assert.match(figures, /identity distance [0-9.]+/);
        assert.match(figures, /age [0-9]+ y/);
        assert.ok(await page.getAttribute(`#parent-${slot} .crop`, 'src'), 'the aligned crop is shown');
      }
      const caption = await page.textContent('#children-grid .child figcaption');
      assert.match(caption, /to A [0-9.]+ · to B [0-9.]+/);
      await shot(page, '02-children.png');

      // Move the mix slider with the keyboard, as a person would: the children change.
      const before = await page.getAttribute('#children-grid .child img', 'src');
      await page.focus('#mix');
      for (let i = 0; i < 20; i++) await page.keyboard.press('ArrowRight');
      assert.equal(await page.textContent('output[for="mix"]'), '0.7');
      await page.waitForFunction((old) => {
        const img = document.querySelector('#children-grid .child img');
        return img && img.src !== old && document.body.dataset.figures === 'true';
      }, before, { timeout: 30_000 });
      await shot(page, '03-slider-moved.png');

      // A child's PNG downloads.
      const [childPng] = await Promise.all([
        page.waitForEvent('download'),
        page.click('#children-grid .child .links a:first-child'),
      ]);
      const childPath = path.join(artifacts, 'child_1.png');
      await childPng.saveAs(childPath);
      assert.deepEqual([...fs.readFileSync(childPath).subarray(1, 4)], [...Buffer.from('PNG')]);

      // The preview carries the family job's provenance record (an iTXt chunk).
      const childBytes = fs.readFileSync(childPath);
      assert.ok(childBytes.includes(Buffer.from('latentface-provenance/1')), 'the child PNG says what made it');
      assert.ok(childBytes.includes(Buffer.from('"job":"family"')), 'made by the family job');

      // The edit panel: parent A by default; move the age slider, the face changes and is judged.
      assert.equal(await page.inputValue('#edit-source'), 'a');
      assert.equal(await page.locator('#edit-sliders input[type=range]').count(), 2);
      assert.match(await page.textContent('#edit-sliders'), /toward child, \+ toward senior/);
      const unedited = await page.getAttribute('#edit-before', 'src');
      const edited = await editAge(page, 15);
      assert.equal(await page.inputValue('#edit-age'), '1.5');
      assert.notEqual(edited, unedited, 'the edited face differs from the face before');
      const editFigures = await page.textContent('#edit-figures');
      assert.match(editFigures, /judged age [0-9]+ y \(before [0-9]+ y, photo [0-9]+ y\)/);
      assert.match(editFigures, /identity distance [0-9.]+ to the photo/);
      await shot(page, '04-edit.png');
      // Further along: another face.
      const further = await editAge(page, 5);
      assert.notEqual(further, edited);
      const [editPng] = await Promise.all([page.waitForEvent('download'), page.click('#edit-png')]);
      const editPath = path.join(artifacts, 'a_edited.png');
      await editPng.saveAs(editPath);
      const editBytes = fs.readFileSync(editPath);
      assert.deepEqual([...editBytes.subarray(1, 4)], [...Buffer.from('PNG')]);
      assert.ok(editBytes.includes(Buffer.from('"job":"edit"')), 'the edited PNG says the edit job made it');
      const [editNpy] = await Promise.all([page.waitForEvent('download'), page.click('#edit-npy')]);
      const npyPath = path.join(artifacts, 'a_edited.npy');
      await editNpy.saveAs(npyPath);
      assert.equal(fs.readFileSync(npyPath).subarray(1, 6).toString('latin1'), 'NUMPY');
      // A child as the face to edit.
      await page.selectOption('#edit-source', 'child-1');
      await page.waitForFunction(() => document.body.dataset.edit === 'figures'
        && document.querySelector('#edit-figures').textContent.includes('to the face before'), null, { timeout: 60_000 });

      // The family sheet.
      await page.click('#sheet');
      await page.waitForSelector('#sheet-img:not([hidden])', { timeout: 60_000 });

      // A small morph: parent A -> child 2 -> parent B, 4 frames a key, as a GIF.
      await page.check('#children-grid .child:nth-child(2) .morph-key');
      assert.equal(await page.locator('#morph-keys li').count(), 3);
      await page.fill('#frames', '4');
      await page.selectOption('#format', 'gif');
      await page.click('#morph-render');
      await page.waitForSelector('#morph-result:not([hidden])', { timeout: 120_000 });
      assert.match(await page.textContent('#morph-status'), /done/);
      await shot(page, '05-morph.png');
      const [gif] = await Promise.all([page.waitForEvent('download'), page.click('#morph-download')]);
      const gifPath = path.join(artifacts, 'morph.gif');
      await gif.saveAs(gifPath);
      assert.equal(fs.readFileSync(gifPath).subarray(0, 6).toString('latin1'), 'GIF89a');

      // A file that is not a photo: the error is shown, naming it.
      await page.setInputFiles('#file-a', { name: 'notes.png', mimeType: 'image/png', buffer: Buffer.from('not pixels') });
      await page.waitForSelector('#parent-a .error:not([hidden])', { timeout: 30_000 });
      assert.match(await page.textContent('#parent-a .error'), /notes\.png is not an image/);
      await shot(page, '06-bad-upload.png');
      // One photo into one slot (the other path): a good photo again, answered.
      await page.setInputFiles('#file-a', path.join(samples, 'bob.png'));
      await page.waitForSelector('#parent-a[data-ready="true"]', { timeout: 120_000 });

      assert.deepEqual(errors.filter((e) => !e.includes('422')), [], 'no script errors');
    });
  });
}
