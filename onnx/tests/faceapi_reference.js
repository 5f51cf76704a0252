// The npm reference for the face_id / face_attributes graphs: face-api's own forward pass
// (TF.js, wasm backend) on prepared crops, batched through one node process.
//
//   node tests/faceapi_reference.js IN_DIR OUT.json
//
// IN_DIR holds meta.json {"count": N} and two raw uint8 RGB files, crops150.u8
// (N x 150 x 150 x 3) and crops112.u8 (N x 112 x 112 x 3), already at the networks' input
// sizes so face-api does no resizing of its own (toBatchTensor resizes only other sizes).
// Writes {"descriptor": [[128]...], "age": [...], "gender": [[male, female]...], "timing": {...}}.
// Run from onnx/ (node_modules is resolved from here); the model folder is the package's.
'use strict';

const fs = require('fs');
const path = require('path');

const ONNX_DIR = path.resolve(__dirname, '..');
const NODE_MODULES = path.join(ONNX_DIR, 'node_modules');

async function main() {
  const [inDir, outPath] = process.argv.slice(2);
  if (!inDir || !outPath) throw new Error('usage: node faceapi_reference.js IN_DIR OUT.json');
  const faceapi = require(path.join(NODE_MODULES, '@vladmandic/face-api/dist/face-api.node-wasm.js'));
  const wasm = require(path.join(NODE_MODULES, '@tensorflow/tfjs-backend-wasm'));
  const { tf } = faceapi;
  wasm.setWasmPaths(path.join(NODE_MODULES, '@tensorflow/tfjs-backend-wasm/dist') + path.sep);
  await tf.setBackend('wasm');
  await tf.ready();
  const modelDir = path.join(NODE_MODULES, '@vladmandic/face-api/model');
  await faceapi.nets.faceRecognitionNet.loadFromDisk(modelDir);
  await faceapi.nets.ageGenderNet.loadFromDisk(modelDir);

  const { count } = JSON.parse(fs.readFileSync(path.join(inDir, 'meta.json'), 'utf8'));
  const c150 = fs.readFileSync(path.join(inDir, 'crops150.u8'));
  const c112 = fs.readFileSync(path.join(inDir, 'crops112.u8'));
  const n150 = 150 * 150 * 3;
  const n112 = 112 * 112 * 3;
  if (c150.length !== count * n150 || c112.length !== count * n112) throw new Error('input sizes do not match meta.json');

  const out = { descriptor: [], age: [], gender: [], backend: tf.getBackend(),
    versions: { faceapi: faceapi.version, tfjs: tf.version_core } };
  let tId = 0;
  let tAttr = 0;
  for (let i = -1; i < count; i++) { // i = -1: one warm-up pass, not recorded
    const k = Math.max(i, 0);
    const a = tf.tensor3d(Int32Array.from(c150.subarray(k * n150, (k + 1) * n150)), [150, 150, 3], 'int32');
    const b = tf.tensor3d(Int32Array.from(c112.subarray(k * n112, (k + 1) * n112)), [112, 112, 3], 'int32');
    const t = performance.now();
    const desc = await faceapi.nets.faceRecognitionNet.computeFaceDescriptor(a);
    const t1 = performance.now();
    const ag = await faceapi.nets.ageGenderNet.predictAgeAndGender(b);
    const t2 = performance.now();
    tf.dispose([a, b]);
    if (i < 0) continue;
    tId += t1 - t;
    tAttr += t2 - t1;
    const male = ag.gender === 'male' ? ag.genderProbability : 1 - ag.genderProbability;
    out.descriptor.push(Array.from(desc));
    out.age.push(ag.age);
    out.gender.push([male, 1 - male]);
  }
  out.timing = { face_id_ms_per_face: tId / Math.max(count, 1), face_attributes_ms_per_face: tAttr / Math.max(count, 1) };
  fs.writeFileSync(outPath, JSON.stringify(out));
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : e);
  process.exit(1);
});
