'use strict'
// Console-friendly commands and small fixes for local_server.js. Call installConsoleCommands(serv)
// right after createMCServer(); commands added later replace flying-squid's of the same name:
//  - tp/teleport and summon also work from the console (flying-squid's are player-only);
//  - give counts are numbers and respect stack sizes (flying-squid stores the count as text);
//  - setblock places a block's default state and reports unknown blocks;
//  - fill and clear, which flying-squid lacks;
//  - respawning after death works on 1.20.1;
//  - a fixed spawn point at the world origin, so tests know where a player appears.
const Vec3 = require('vec3').Vec3
const { UserError } = require('flying-squid')

const LIVING = new Set(['mob', 'animal', 'hostile', 'ambient', 'water_creature', 'passive', 'living'])
const skipPrefix = (name) => String(name).replace(/^minecraft:/, '')

function installConsoleCommands (serv, { fixedSpawn = true } = {}) {
  const registry = serv.registry
  const Item = require('prismarine-item')(registry)

  function playersFor (selector, ctx) {
    const players = serv.getPlayers(selector, ctx.player)
    if (players.length === 0) throw new UserError(`No player matches ${selector}`)
    return players
  }

  function coordinate (text, base) {
    if (!/^~?-?\d*\.?\d*$/.test(text) || text === '' || text === '-') throw new UserError(`Bad coordinate ${text}`)
    return serv.posFromString(text, base)
  }

  function position (args, origin) {
    const [x, y, z] = args.map((t, i) => coordinate(t, origin[['x', 'y', 'z'][i]]))
    if (Math.abs(x) > 29999999 || Math.abs(z) > 29999999 || Math.abs(y) > 4096) throw new UserError('Invalid position')
    // vanilla: whole numbers mean the middle of the block (x and z)
    return new Vec3(args[0].includes('.') ? x : x + 0.5, y, args[2].includes('.') ? z : z + 0.5)
  }

  serv.commands.add({
    base: 'teleport',
    aliases: ['tp'],
    info: 'teleport players to a position or to another player',
    usage: '/tp [player] <x> <y> <z> | /tp [player] <other player>',
    op: true,
    parse (str) {
      const args = str.trim().split(/\s+/).filter(Boolean)
      return args.length >= 1 && args.length <= 4 ? args : false
    },
    action (args, ctx) {
      let targets
      if (args.length === 1 || args.length === 3) {
        if (!ctx.player) throw new UserError('From the console name the player: /tp <player> ...')
        targets = [ctx.player]
      } else {
        targets = ctx.player ? ctx.player.selectorString(args[0]) : serv.selectorString(args[0])
        if (targets.length === 0) throw new UserError(`No entity matches ${args[0]}`)
        args = args.slice(1)
      }
      if (args.length === 1) {
        const to = ctx.player ? ctx.player.selectorString(args[0]) : serv.selectorString(args[0])
        if (to.length === 0) throw new UserError(`No entity matches ${args[0]}`)
        targets.forEach((e) => e.teleport(to[0].position.clone()))
        return
      }
      for (const entity of targets) entity.teleport(position(args, entity.position))
    }
  })

  serv.commands.add({
    base: 'give',
    info: 'give items to players',
    usage: '/give <player> <item> [count]',
    tab: ['player', 'item', 'number'],
    op: true,
    parse (str, ctx) {
      const args = str.trim().split(/\s+/)
      if (args.length < 2 || args.length > 3) return false
      const item = isNaN(+args[1]) ? registry.itemsByName[skipPrefix(args[1])] : registry.items[+args[1]]
      if (!item) throw new UserError(`Unknown item '${args[1]}'`)
      const count = args[2] === undefined ? 1 : Number(args[2])
      if (!Number.isInteger(count) || count < 1 || count > 6400) throw new UserError('Count must be a whole number from 1 to 6400')
      return { players: playersFor(args[0], ctx), item, count }
    },
    action ({ players, item, count }) {
      for (const player of players) {
        let left = count
        const slots = []
        for (let i = 36; i <= 44; i++) slots.push(i)
        for (let i = 9; i <= 35; i++) slots.push(i)
        for (const s of slots) { // top up stacks first, then empty slots
          const have = player.inventory.slots[s]
          if (left === 0 || !have || have.type !== item.id || Number(have.count) >= item.stackSize) continue
          const n = Math.min(item.stackSize - Number(have.count), left)
          player.inventory.updateSlot(s, new Item(item.id, Number(have.count) + n, have.metadata, have.nbt))
          left -= n
        }
        for (const s of slots) {
          if (left === 0) break
          if (player.inventory.slots[s]) continue
          const n = Math.min(item.stackSize, left)
          player.inventory.updateSlot(s, new Item(item.id, n))
          left -= n
        }
        if (left > 0) throw new UserError(`Inventory of ${player.username} is full; ${left} ${item.name} not given`)
      }
    }
  })

  serv.commands.add({
    base: 'clear',
    info: 'remove items from a player inventory',
    usage: '/clear <player> [item] [count]',
    op: true,
    parse (str, ctx) {
      const args = str.trim().split(/\s+/).filter(Boolean)
      if (args.length < 1 || args.length > 3) return false
      let item = null
      if (args[1]) {
        item = registry.itemsByName[skipPrefix(args[1])]
        if (!item) throw new UserError(`Unknown item '${args[1]}'`)
      }
      const count = args[2] === undefined ? Infinity : Number(args[2])
      if (count !== Infinity && (!Number.isInteger(count) || count < 0)) throw new UserError('Count must be a whole number')
      return { players: playersFor(args[0], ctx), item, count }
    },
    action ({ players, item, count }) {
      let removed = 0
      for (const player of players) {
        let left = count
        for (let s = 0; s < player.inventory.slots.length && left > 0; s++) {
          const have = player.inventory.slots[s]
          if (!have || (item && have.type !== item.id)) continue
          const n = Math.min(Number(have.count), left)
          player.inventory.updateSlot(s, Number(have.count) - n > 0 ? new Item(have.type, Number(have.count) - n, have.metadata, have.nbt) : null)
          left -= n
          removed += n
        }
      }
      return `Removed ${removed} item(s)`
    }
  })

  // flying-squid's setblock places a block's first state (snowy grass, oak logs lying along x)
  // and fails with a TypeError on unknown names.
  serv.commands.add({
    base: 'setblock',
    info: 'set a block at a position (its default state, or its first state plus [data])',
    usage: '/setblock <x> <y> <z> <block> [data]',
    op: true,
    tab: ['blockX', 'blockY', 'blockZ', 'block', 'number'],
    parse (str) {
      const args = str.trim().split(/\s+/)
      if (args.length < 4 || args.length > 5) return false
      const block = isNaN(+args[3]) ? registry.blocksByName[skipPrefix(args[3])] : registry.blocks[+args[3]]
      if (!block) throw new UserError(`Unknown block '${args[3]}'`)
      const data = args[4] === undefined ? null : Number(args[4])
      const states = (block.maxStateId ?? block.minStateId) - block.minStateId + 1
      if (data !== null && (!Number.isInteger(data) || data < 0 || data >= states)) throw new UserError(`data must be 0-${states - 1} for ${block.name}`)
      return { coords: args.slice(0, 3), block, data }
    },
    async action ({ coords, block, data }, ctx) {
      const origin = ctx.player ? ctx.player.position : new Vec3(0, 0, 0)
      const pos = new Vec3(...coords.map((t, i) => coordinate(t, origin[['x', 'y', 'z'][i]]))).floored()
      const stateId = data === null ? (block.defaultState ?? block.minStateId) : block.minStateId + data
      await serv.setBlock(ctx.player ? ctx.player.world : serv.overworld, pos, stateId)
    }
  })

  serv.commands.add({
    base: 'fill',
    info: 'fill a box with a block',
    usage: '/fill <x1> <y1> <z1> <x2> <y2> <z2> <block>',
    op: true,
    parse (str) {
      const args = str.trim().split(/\s+/)
      if (args.length !== 7) return false
      const block = registry.blocksByName[skipPrefix(args[6])]
      if (!block) throw new UserError(`Unknown block '${args[6]}'`)
      const n = args.slice(0, 6).map((t) => {
        if (!/^-?\d+$/.test(t)) throw new UserError(`Bad coordinate ${t} (fill takes whole numbers)`)
        return Number(t)
      })
      return { from: new Vec3(Math.min(n[0], n[3]), Math.min(n[1], n[4]), Math.min(n[2], n[5])), to: new Vec3(Math.max(n[0], n[3]), Math.max(n[1], n[4]), Math.max(n[2], n[5])), block }
    },
    async action ({ from, to, block }, ctx) {
      const volume = (to.x - from.x + 1) * (to.y - from.y + 1) * (to.z - from.z + 1)
      if (volume > 32768) throw new UserError(`Too many blocks in the specified area (${volume} > 32768)`)
      const world = ctx.player ? ctx.player.world : serv.overworld
      const stateId = block.defaultState ?? block.minStateId
      const writes = []
      for (let x = from.x; x <= to.x; x++) {
        for (let y = from.y; y <= to.y; y++) {
          for (let z = from.z; z <= to.z; z++) writes.push(serv.setBlock(world, new Vec3(x, y, z), stateId))
        }
      }
      await Promise.all(writes)
      return `Filled ${volume} block(s)`
    }
  })

  serv.commands.add({
    base: 'summon',
    info: 'summon an entity',
    usage: '/summon <entity> [x y z]',
    tab: ['entity'],
    op: true,
    parse (str) {
      const args = str.trim().split(/\s+/).filter(Boolean)
      return args.length === 1 || args.length === 4 ? args : false
    },
    action (args, ctx) {
      const entity = registry.entitiesByName[skipPrefix(args[0])]
      if (!entity) throw new UserError(`No entity named ${args[0]}`)
      if (Object.keys(serv.entities).length > 100) throw new UserError('Too many entities')
      let pos
      if (args.length === 4) pos = position(args.slice(1), ctx.player ? ctx.player.position : new Vec3(0, 0, 0))
      else if (ctx.player) pos = ctx.player.position.clone()
      else throw new UserError('From the console give a position: /summon <entity> <x> <y> <z>')
      const world = ctx.player ? ctx.player.world : serv.overworld
      if (LIVING.has(entity.type)) {
        // flying-squid only knows the data's 'mob' type as mobs (no cows); register the rest.
        if (!registry.mobs[entity.id]) registry.mobs[entity.id] = entity
        serv.spawnMob(entity.id, world, pos, { velocity: new Vec3(0, 0, 0) })
      } else {
        serv.spawnObject(entity.id, world, pos, { velocity: new Vec3(0, 0, 0) })
      }
    }
  })

  // Respawning is broken in flying-squid on 1.20.1: it waits for client_command actionId 0, which
  // this version's protocol data calls 'perform_respawn', and its respawn packet sends the number
  // 0 as the dimension name. A killed player would stay dead. Respawn at the spawn point with the
  // chunks sent again, keeping the inventory (flying-squid drops nothing on death).
  const loginPacket = registry.loginPacket || {}
  serv.on('newPlayer', (player) => {
    if (typeof loginPacket.dimension !== 'string' && typeof loginPacket.worldType === 'string') {
      player._sendRespawn = (newDifficulty, newGameMode, newDimension) => {
        player._client.write('respawn', {
          dimension: loginPacket.worldType,
          worldName: serv.dimensionNames[newDimension || 0],
          hashedSeed: serv.hashedSeed,
          gamemode: newGameMode ?? player.gameMode,
          previousGamemode: player.prevGameMode ?? 255,
          isDebug: false,
          isFlat: false,
          copyMetadata: false,
          portalCooldown: 0
        })
      }
    }
    player._client.on('client_command', (data) => {
      if ((data.actionId ?? data.payload) !== 'perform_respawn' || player.health > 0) return
      player.behavior('requestRespawn', {}, async () => {
        // a 1.20.1 client drops its chunks on respawn: forget what was sent and send them again
        player._unloadAllChunks(true)
        player._sendRespawn()
        if (player.spawnPoint) player.position = player.spawnPoint.clone()
        player.updateHealth(20)
        player.nearbyEntities = []
        player.updateAndSpawn()
        await player.worldSendInitialChunks()
        player.sendSelfPosition()
        player.worldSendRestOfChunks()
      })
    })
  })

  if (fixedSpawn) {
    // flying-squid picks a random spot in 0..30; use the top of block (0, 0) (east of any water).
    const water = new Set(['water', 'lava'].map((n) => registry.blocksByName[n]?.id).filter(Boolean))
    serv.getSpawnPoint = async (world) => {
      let point = new Vec3(0, 120, 0)
      while (point.y > -64 && (await world.getBlockType(point)) === 0) point = point.offset(0, -1, 0)
      while (water.has(await world.getBlockType(point))) point = point.offset(1, 0, 0)
      while ((await world.getBlockType(point)) !== 0) point = point.offset(0, 1, 0)
      return point.offset(0.5, 0, 0.5)
    }
  }
}

module.exports = { installConsoleCommands }
