'use strict'
// Line protocol helpers (PROTOCOL.md, version 1): parsing, encoding and parameter checks.
// Pure functions, no I/O.

const PROTOCOL_VERSION = 1
const SIDECAR_VERSION = '1.0.0'

// Parses one input line. Returns one of
//   {kind: 'empty'}                         blank line, ignore
//   {kind: 'protocol_error', error}         not JSON / not an object / no usable id
//   {kind: 'bad_request', id, error}        has an id but no usable op
//   {kind: 'request', id, op, params}       params: the object without id and op
function parseLine (line) {
  const text = String(line).trim()
  if (text === '') return { kind: 'empty' }
  let msg
  try {
    msg = JSON.parse(text)
  } catch (err) {
    return { kind: 'protocol_error', error: `not JSON: ${clip(text, 80)}` }
  }
  if (msg === null || typeof msg !== 'object' || Array.isArray(msg)) {
    return { kind: 'protocol_error', error: 'a request must be a JSON object' }
  }
  if (!('id' in msg)) return { kind: 'protocol_error', error: 'a request needs an "id"' }
  if (!Number.isInteger(msg.id) || msg.id <= 0) {
    return { kind: 'protocol_error', error: `"id" must be a positive integer, got ${clip(JSON.stringify(msg.id), 40)}` }
  }
  if (!('op' in msg)) return { kind: 'bad_request', id: msg.id, error: 'missing "op"' }
  if (typeof msg.op !== 'string' || msg.op === '') {
    return { kind: 'bad_request', id: msg.id, error: '"op" must be a non-empty string' }
  }
  const params = Object.assign({}, msg)
  delete params.id
  delete params.op
  return { kind: 'request', id: msg.id, op: msg.op, params }
}

function encode (obj) {
  return JSON.stringify(obj) + '\n'
}

function reply (id, result) {
  return Object.assign({ id, ok: true }, result || {})
}

function failure (id, error, extra) {
  return Object.assign({ id, ok: false }, extra || {}, { error: String(error) })
}

function event (kind, fields, now) {
  return Object.assign({ event: kind, at: now === undefined ? Date.now() : now }, fields || {})
}

function hello (mineflayerVersion, nodeVersion) {
  return { event: 'hello', protocol: PROTOCOL_VERSION, sidecar: SIDECAR_VERSION, mineflayer: mineflayerVersion, node: nodeVersion }
}

// Parameter specs: {name: {type, required, default, enum, min, max, maxLength}}
// type: 'number' | 'integer' | 'string' | 'boolean' | 'object'
function typeOk (type, v) {
  switch (type) {
    case 'number': return typeof v === 'number' && Number.isFinite(v)
    case 'integer': return Number.isInteger(v)
    case 'string': return typeof v === 'string'
    case 'boolean': return typeof v === 'boolean'
    case 'object': return v !== null && typeof v === 'object' && !Array.isArray(v)
    default: return false
  }
}

const TYPE_WORDS = { number: 'a number', integer: 'a whole number', string: 'a string', boolean: 'true or false', object: 'an object' }

// Returns {ok: true, value} with defaults filled in, or {ok: false, error}.
// `where` prefixes errors ("goto: ..."); unknown names are refused unless allowUnknown.
function validate (spec, params, { where = '', allowUnknown = false } = {}) {
  const pre = where ? `${where}: ` : ''
  if (params === undefined || params === null) params = {}
  if (!typeOk('object', params)) return { ok: false, error: `${pre}parameters must be an object` }
  const value = {}
  for (const [name, rule] of Object.entries(spec)) {
    const v = params[name]
    if (v === undefined || v === null) {
      if (rule.required) return { ok: false, error: `${pre}missing parameter "${name}"` }
      if (rule.default !== undefined) value[name] = rule.default
      continue
    }
    if (!typeOk(rule.type, v)) return { ok: false, error: `${pre}"${name}" should be ${TYPE_WORDS[rule.type] || rule.type}` }
    if (rule.type === 'string' && rule.nonEmpty !== false && v.trim() === '' && rule.required) {
      return { ok: false, error: `${pre}"${name}" is empty` }
    }
    if (rule.enum && !rule.enum.includes(v)) return { ok: false, error: `${pre}"${name}" should be one of ${rule.enum.join(', ')}` }
    if (rule.min !== undefined && v < rule.min) return { ok: false, error: `${pre}"${name}" should be at least ${rule.min}` }
    if (rule.max !== undefined && v > rule.max) return { ok: false, error: `${pre}"${name}" should be at most ${rule.max}` }
    if (rule.maxLength !== undefined && v.length > rule.maxLength) {
      return { ok: false, error: `${pre}"${name}" is longer than ${rule.maxLength} characters` }
    }
    value[name] = v
  }
  if (!allowUnknown) {
    const unknown = Object.keys(params).filter(k => !(k in spec))
    if (unknown.length) {
      const known = Object.keys(spec)
      return { ok: false, error: `${pre}unknown parameter "${unknown[0]}"${known.length ? ` (takes ${known.join(', ')})` : ' (takes none)'}` }
    }
  }
  return { ok: true, value }
}

function clip (s, n) {
  s = String(s)
  return s.length > n ? s.slice(0, n - 1) + '…' : s
}

module.exports = { PROTOCOL_VERSION, SIDECAR_VERSION, parseLine, encode, reply, failure, event, hello, validate, clip }
