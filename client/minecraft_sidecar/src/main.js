'use strict'
// Spark's Minecraft sidecar: JSON lines on stdio (PROTOCOL.md). stdout carries protocol lines only.

// Libraries (protodef, minecraft-protocol) print to stdout: send every console line to stderr
// before any of them is loaded.
for (const k of ['log', 'info', 'warn', 'debug']) console[k] = (...a) => console.error(...a)

const readline = require('readline')
const protocol = require('./protocol')

function send (obj) {
  process.stdout.write(protocol.encode(obj))
}

function emit (kind, fields) {
  send(protocol.event(kind, fields))
}

function mineflayerVersion () {
  try { return require('mineflayer/package.json').version } catch (e) { return 'unknown' }
}

// The hello goes out before the heavier modules load.
send(protocol.hello(mineflayerVersion(), process.version))

const { SkillRunner } = require('./runner')
const { Session } = require('./session')
const { observe } = require('./observe')

const runner = new SkillRunner(emit)
const session = new Session({ emit, runner })
let quitting = false

const OPS = {
  ping: { params: {}, run: async () => ({ pong: true }) },
  connect: {
    params: {
      host: { type: 'string', required: true },
      port: { type: 'integer', default: 25565, min: 1, max: 65535 },
      username: { type: 'string', required: true, maxLength: 16 },
      version: { type: 'string', default: '1.20.1' },
      mode: { type: 'string', default: 'play', enum: ['play', 'watch'] },
      watch_player: { type: 'string' },
      follow_distance: { type: 'number', default: 6, min: 1, max: 32 },
      reflexes: { type: 'boolean', default: true },
      timeout_ms: { type: 'integer', default: 30000, min: 1000, max: 600000 }
    },
    check: p => {
      if (!/^[A-Za-z0-9_]{1,16}$/.test(p.username)) return 'username must be 1 to 16 letters, digits or _'
      if (p.mode === 'watch' && !p.watch_player) return 'watch mode needs watch_player'
      return null
    },
    run: async (p) => session.connect(p)
  },
  observe: {
    params: { radius: { type: 'number', default: 16, min: 1, max: 32 } },
    needsBot: true,
    run: async (p) => ({ observation: observe(session.bot, { radius: p.radius, skill: runner.name }) })
  },
  skill: {
    params: {
      name: { type: 'string', required: true },
      args: { type: 'object', default: {} },
      timeout_ms: { type: 'integer', default: 60000, min: 1, max: 3600000 }
    },
    needsBot: true,
    run: async (p) => {
      const r = await runner.run(session.bot, p.name, p.args, p.timeout_ms, session.mode)
      if (r.ok) return { status: 'done', detail: r.detail }
      return { failed: true, status: 'failed', error: r.error }
    }
  },
  stop: { params: {}, run: async () => ({ stopped: runner.stop('stopped') }) },
  quit: { params: {}, run: async () => { quitting = true; return {} } }
}

async function handle (id, op, params) {
  const spec = Object.prototype.hasOwnProperty.call(OPS, op) ? OPS[op] : null
  if (!spec) return send(protocol.failure(id, `unknown op "${op}" (known: ${Object.keys(OPS).join(', ')})`))
  // A skill request that never ran still answers with status "failed".
  const fail = (error) => send(protocol.failure(id, error, op === 'skill' ? { status: 'failed' } : null))
  const v = protocol.validate(spec.params, params, { where: op, allowUnknown: true })
  if (!v.ok) return fail(v.error)
  const bad = spec.check && spec.check(v.value)
  if (bad) return fail(`${op}: ${bad}`)
  if (spec.needsBot && !(session.bot && session.bot.entity)) return fail("I'm not connected to a game")
  let result
  try {
    result = await spec.run(v.value)
  } catch (err) {
    const msg = err && err.name === 'SkillError' ? err.message : `${op} failed: ${err && err.message ? err.message : err}`
    if (!(err && err.name === 'SkillError')) console.error(`[sidecar] ${op}:`, err && err.stack ? err.stack : err)
    return fail(msg)
  }
  if (result && result.failed) {
    delete result.failed
    const error = result.error
    delete result.error
    send(protocol.failure(id, error, result))
  } else {
    send(protocol.reply(id, result))
  }
  if (op === 'quit') await shutdown(0)
}

let shuttingDown = false
async function shutdown (code) {
  if (shuttingDown) return
  shuttingDown = true
  runner.stop('stopped')
  try { await session.close() } catch (e) {}
  // Let stdout drain before leaving.
  process.stdout.write('', () => process.exit(code))
  setTimeout(() => process.exit(code), 1000).unref()
}

process.on('uncaughtException', (err) => {
  console.error('[sidecar] uncaught exception (still serving):', err && err.stack ? err.stack : err)
})
process.on('unhandledRejection', (err) => {
  console.error('[sidecar] unhandled rejection (still serving):', err && err.stack ? err.stack : err)
})
process.stdout.on('error', (err) => { // the client went away
  if (err && err.code === 'EPIPE') shutdown(0)
})

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity, terminal: false })
rl.on('line', (line) => {
  if (quitting) return
  const msg = protocol.parseLine(line)
  if (msg.kind === 'empty') return
  if (msg.kind === 'protocol_error') return emit('protocol_error', { error: msg.error })
  if (msg.kind === 'bad_request') return send(protocol.failure(msg.id, msg.error))
  handle(msg.id, msg.op, msg.params).catch(err => {
    console.error('[sidecar] handler:', err)
    send(protocol.failure(msg.id, `internal error: ${err && err.message ? err.message : err}`))
  })
})
rl.on('close', () => shutdown(0))
