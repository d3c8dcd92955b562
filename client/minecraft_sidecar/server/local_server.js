#!/usr/bin/env node
'use strict'
// A local offline-mode Minecraft server (flying-squid) for trying Spark's game mode and for the
// tests. stdout carries only the control protocol: one `READY <port>` line once the server
// listens, then one `OK <command>` / `ERR <command>: <message>` line per command read from stdin.
// Everything else (flying-squid's log, console.log) goes to stderr.
const fs = require('fs')
const path = require('path')
const readline = require('readline')

const HELP = `Usage: node server/local_server.js [options]

Starts a local offline-mode Minecraft Java server (flying-squid) with vanilla crafting
(2x2 inventory grid and crafting tables) for Spark's game mode. Join it from Minecraft
Java Edition (multiplayer, direct connect, localhost:<port>, matching version) or let
the bot sidecar connect to it.

Options:
  --port N             port to listen on (default 25565; 0 picks a free one)
  --host ADDR          address to bind (default 127.0.0.1; 0.0.0.0 to accept the LAN)
  --version V          Minecraft version (default 1.20.1)
  --gamemode MODE      survival | creative | adventure | spectator (default survival)
  --world TYPE         flat (superflat grass, deterministic; default) | default (hilly terrain)
  --seed N             world seed (default random; the flat world ignores it)
  --op-all             make every player an operator (players may type /give, /tp, ...)
  --view-distance N    chunks sent around each player (default 4)
  --world-folder DIR   keep the world and player data in DIR (default: in memory, gone on exit)
  --max-players N      (default 10)
  --no-stdin           ignore stdin (run in the background; stop with SIGTERM or Ctrl+C)
  -h, --help           show this help

stdin takes one server console command per line, with or without the leading slash;
each answers on stdout with "OK <command>" or "ERR <command>: <message>". Console commands:
  setblock <x> <y> <z> <block> [state offset]   fill <x1> <y1> <z1> <x2> <y2> <z2> <block>
  give <player> <item> [count]                  clear <player> [item] [count]
  tp <player> <x> <y> <z>  |  tp <player> <other player>
  time set <day|night|ticks>  |  time add <ticks>  |  day  |  night
  gamemode <mode> <player>    kill <player|selector>    summon <entity> [x y z]
  weather <clear|rain>        difficulty <0-3>           say <message>
  op <player>  deop <player>  kick <player> [reason]     xp, effect, enchant, ban, ...
  help                        lists everything flying-squid knows
stdin closing (unless --no-stdin), SIGTERM or SIGINT stop the server.
`

function parseArgs (argv) {
  const opts = {
    port: 25565,
    host: '127.0.0.1',
    version: '1.20.1',
    gamemode: 'survival',
    world: 'flat',
    seed: undefined,
    opAll: false,
    viewDistance: 4,
    worldFolder: undefined,
    maxPlayers: 10,
    stdin: true
  }
  const takesValue = {
    '--port': 'port',
    '--host': 'host',
    '--version': 'version',
    '--gamemode': 'gamemode',
    '--world': 'world',
    '--seed': 'seed',
    '--view-distance': 'viewDistance',
    '--world-folder': 'worldFolder',
    '--max-players': 'maxPlayers'
  }
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i]
    let value
    if (arg.startsWith('--') && arg.includes('=')) [arg, value] = [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)]
    if (arg === '-h' || arg === '--help') {
      process.stdout.write(HELP)
      process.exit(0)
    } else if (arg === '--op-all') {
      opts.opAll = true
    } else if (arg === '--no-stdin') {
      opts.stdin = false
    } else if (takesValue[arg]) {
      if (value === undefined) value = argv[++i]
      if (value === undefined) usageError(`${arg} needs a value`)
      opts[takesValue[arg]] = value
    } else {
      usageError(`unknown argument ${arg}`)
    }
  }
  for (const key of ['port', 'viewDistance', 'maxPlayers']) {
    opts[key] = Number(opts[key])
    if (!Number.isInteger(opts[key]) || opts[key] < 0) usageError(`--${key} must be a whole number`)
  }
  if (opts.seed !== undefined) {
    opts.seed = Number(opts.seed)
    if (!Number.isInteger(opts.seed)) usageError('--seed must be an integer')
  }
  const modes = { survival: 0, creative: 1, adventure: 2, spectator: 3, 0: 0, 1: 1, 2: 2, 3: 3 }
  if (!(opts.gamemode in modes)) usageError(`unknown game mode ${opts.gamemode}`)
  opts.gameModeId = modes[opts.gamemode]
  if (!['flat', 'default'].includes(opts.world)) usageError(`unknown world type ${opts.world}`)
  return opts
}

function usageError (message) {
  process.stderr.write(`local_server: ${message}\n\n${HELP}`)
  process.exit(2)
}

const opts = parseArgs(process.argv.slice(2))

// stdout is the control channel. flying-squid logs with console.log and its log plugin writes a
// readline prompt and cursor moves to process.stdout, so every write to process.stdout goes to
// stderr and the protocol lines go straight to file descriptor 1.
function reply (line) {
  fs.writeSync(1, line + '\n')
}
process.stdout.write = process.stderr.write.bind(process.stderr)
// flying-squid's log plugin also opens a readline on stdin that runs each line as a command;
// this process owns stdin, so that interface gets a stand-in that never reads.
const realCreateInterface = readline.createInterface
readline.createInterface = function (options, ...rest) {
  if (options && options.input === process.stdin && !options.sparkOwnsStdin) {
    const dummy = new (require('events').EventEmitter)()
    dummy.setPrompt = dummy.prompt = dummy.close = dummy.write = () => {}
    return dummy
  }
  return realCreateInterface.call(this, options, ...rest)
}

// ...and moves the cursor on process.stdout before each log line: pointless off a terminal.
const realCursorTo = readline.cursorTo
readline.cursorTo = (stream, ...rest) => (stream === process.stdout && !process.stderr.isTTY ? true : realCursorTo(stream, ...rest))
if (!process.stderr.isTTY) { try { require('colors').disable() } catch {} }

const mcServer = require('flying-squid')
const { installConsoleCommands } = require('./console_commands')

if (opts.worldFolder) fs.mkdirSync(opts.worldFolder, { recursive: true })
const generation = opts.world === 'flat'
  ? { name: 'superflat', options: {} }
  : { name: 'diamond_square', options: { worldHeight: 80 } }
if (opts.seed !== undefined) generation.options.seed = opts.seed

const serv = mcServer.createMCServer({
  port: opts.port,
  host: opts.host,
  version: opts.version,
  'online-mode': false,
  motd: 'Spark VTuber local server',
  'max-players': opts.maxPlayers,
  logging: false, // no logs/ folder; the log goes to stderr
  gameMode: opts.gameModeId,
  difficulty: 1,
  worldFolder: opts.worldFolder ? path.resolve(opts.worldFolder) : undefined,
  generation,
  kickTimeout: 10000,
  plugins: { [path.join(__dirname, 'crafting.js')]: {} },
  modpe: false,
  'view-distance': opts.viewDistance,
  'player-list-text': { header: { text: 'Spark VTuber' }, footer: { text: 'local server' } },
  'everybody-op': opts.opAll,
  'max-entities': 100
})
installConsoleCommands(serv, { fixedSpawn: true })

let ready = false
let stopping = false
serv.on('error', (err) => { // flying-squid's log plugin logs these too
  if (ready || !(err && err.code)) return
  process.stderr.write(`local_server: cannot start: ${err.message}\n`)
  process.exit(1) // EADDRINUSE and the like: nothing to serve
})
serv.once('ready', () => {
  ready = true
  // flying-squid's dependency exit-hook exits on the first signal before players are saved; this
  // process handles SIGINT/SIGTERM itself.
  for (const sig of ['SIGINT', 'SIGTERM']) {
    for (const listener of process.listeners(sig)) if (listener !== onSignal) process.removeListener(sig, listener)
  }
  reply(`READY ${serv.listeningPort ?? opts.port}`)
  if (!opts.stdin) return
  const rl = realCreateInterface({ input: process.stdin, sparkOwnsStdin: true, terminal: false })
  let queue = Promise.resolve()
  rl.on('line', (line) => { queue = queue.then(() => runCommand(line)) })
  rl.on('close', () => { queue.then(() => stop(0)) })
})

async function runCommand (line) {
  const command = line.trim().replace(/^\//, '')
  if (!command) return
  if (command === 'stop') { // flying-squid's /stop exits before anyone could answer
    reply('OK stop')
    return stop(0)
  }
  try {
    const output = await serv.commands.use(command, {}, true)
    // Commands answer in free text; a few report failures that way instead of throwing.
    if (output && /^(Usage:|No entity named|That isn't|You do not have|This command is)/.test(output)) {
      reply(`ERR ${command}: ${oneLine(output)}`)
      return
    }
    if (output) serv.info(`${command}: ${output}`)
    reply(`OK ${command}`)
  } catch (err) {
    reply(`ERR ${command}: ${oneLine(err && err.message ? err.message : String(err))}`)
  }
}

function oneLine (text) {
  return String(text).replace(/\u00a7./g, '').replace(/\s*\n\s*/g, ' ').trim()
}

async function stop (code) {
  if (stopping) return
  stopping = true
  const timer = setTimeout(() => process.exit(code), 3000)
  timer.unref()
  try {
    await serv.quit('Server closed')
    // Player data is written after the disconnect; give those writes a moment.
    await new Promise((resolve) => setTimeout(resolve, 200))
  } catch (err) {
    process.stderr.write(`local_server: error while stopping: ${err && err.stack ? err.stack : err}\n`)
  }
  process.exit(code)
}

function onSignal () { stop(0) }
process.on('SIGINT', onSignal)
process.on('SIGTERM', onSignal)
