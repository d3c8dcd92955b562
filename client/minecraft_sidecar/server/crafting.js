'use strict'
// Vanilla crafting for flying-squid 1.12 (which implements none), as an external flying-squid
// plugin: createMCServer({ plugins: { [require.resolve('./crafting.js')]: {} } }).
//
// flying-squid's own window_click handler reads `click.item`, which 1.17+ clients no longer send,
// so on 1.20.1 it cannot move anything; this plugin replaces it for every window it knows:
//  - the player inventory (window 0): result slot 0, 2x2 grid 1-4, armor 5-8, 9-35 main,
//    36-44 hotbar, 45 offhand;
//  - a crafting table (opened by right-clicking a crafting_table block): result 0, 3x3 grid 1-9,
//    10-45 the player's inventory slots 9-44 (the same items, not a copy).
// The carried (cursor) item is server state too. Clicks follow vanilla's AbstractContainerMenu:
// pickup, shift-click (quick move, repeated crafting from the result slot), hotbar swap, clone,
// throw, drag and double-click. As vanilla does, the server answers a click with the slots the
// client got wrong plus the result slot whenever the grid was involved (mineflayer waits for it),
// and with the whole window when the click carries an unknown stateId (mineflayer sends -1).
// Closing a window (or disconnecting) puts grid items and the cursor back into the inventory.
// Recipes come from minecraft-data. It lists every variant as its own recipe (oak planks from
// each kind of log, a pickaxe from each kind of planks); recipes that only differ by one such
// substituted item are also merged so mixed planks work, as vanilla's item tags allow.
// Also fixed here: player.collect() picks up whole dropped stacks (flying-squid takes one item).

const Vec3 = require('vec3').Vec3

// Items that leave something behind in the grid when used (vanilla's crafting remainder).
const REMAINDERS = {
  milk_bucket: 'bucket',
  water_bucket: 'bucket',
  lava_bucket: 'bucket',
  powder_snow_bucket: 'bucket',
  honey_bottle: 'glass_bottle',
  dragon_breath: 'glass_bottle'
}

// ---------------------------------------------------------------------------------------------
// Recipes

function trimShape (shape) {
  const width = Math.max(...shape.map((row) => row.length))
  let rows = shape.map((row) => Array.from({ length: width }, (_, x) => (row[x] == null || row[x] === -1 ? null : row[x])))
  rows = rows.filter((row) => row.some((id) => id !== null))
  let minX = width
  let maxX = -1
  for (const row of rows) {
    row.forEach((id, x) => {
      if (id !== null) { minX = Math.min(minX, x); maxX = Math.max(maxX, x) }
    })
  }
  return rows.map((row) => row.slice(minX, maxX + 1))
}

function ingredientId (value) {
  if (value == null) return null
  if (typeof value === 'number') return value === -1 ? null : value
  if (Array.isArray(value)) return value.map(ingredientId).filter((id) => id !== null)
  if (typeof value === 'object' && 'id' in value) return ingredientId(value.id)
  return null
}

// A cell accepts a set of item ids (null: must be empty).
function toCell (value) {
  const id = ingredientId(value)
  if (id === null || (Array.isArray(id) && id.length === 0)) return null
  return new Set(Array.isArray(id) ? id : [id])
}

// Members of a group share result, shape and empty cells. When every member is the first one
// with the cells of one set of positions all swapped for another single item (oak planks ->
// birch planks everywhere), the cells at those positions may mix the variants.
function mergeVariants (members) {
  if (members.length < 2) return null
  const base = members[0]
  const single = (cell) => (cell && cell.size === 1 ? [...cell][0] : undefined)
  let varying = null
  for (const member of members.slice(1)) {
    const differing = []
    for (let i = 0; i < base.length; i++) {
      if (base[i] === null && member[i] === null) continue // same empty cells (the group key)
      const a = single(base[i])
      const b = single(member[i])
      if (a === undefined || b === undefined) return null
      if (a !== b) differing.push(i)
    }
    if (differing.length === 0) continue
    const key = differing.join(',')
    if (varying === null) varying = key
    else if (varying !== key) return null
    if (new Set(differing.map((i) => single(member[i]))).size !== 1) return null
    if (new Set(differing.map((i) => single(base[i]))).size !== 1) return null
  }
  if (varying === null) return null
  const positions = varying.split(',').map(Number)
  const ids = new Set(members.map((m) => single(m[positions[0]])))
  return base.map((cell, i) => (positions.includes(i) ? ids : cell))
}

function createRecipeBook (registry) {
  const shaped = []
  const shapeless = []
  const shapedGroups = new Map()
  const shapelessGroups = new Map()
  for (const list of Object.values(registry.recipes || {})) {
    for (const recipe of list) {
      const result = { id: ingredientId(recipe.result.id ?? recipe.result), count: recipe.result.count ?? 1 }
      if (typeof result.id !== 'number') continue
      if (recipe.inShape) {
        const shape = trimShape(recipe.inShape.map((row) => row.map((v) => { const id = ingredientId(v); return Array.isArray(id) ? (id.length ? id : null) : id })))
        if (shape.length === 0) continue
        const h = shape.length
        const w = shape[0].length
        const cells = shape.flat().map(toCell)
        const entry = { w, h, cells, result }
        shaped.push(entry)
        const key = `${result.id}:${result.count}:${w}x${h}:${cells.map((c) => (c ? 1 : 0)).join('')}`
        if (!shapedGroups.has(key)) shapedGroups.set(key, [])
        shapedGroups.get(key).push(entry)
      } else if (recipe.ingredients) {
        const cells = recipe.ingredients.map(toCell).filter((c) => c !== null)
        if (cells.length === 0 || cells.length > 9) continue
        const entry = { cells, result }
        shapeless.push(entry)
        const key = `${result.id}:${result.count}:${cells.length}`
        if (!shapelessGroups.has(key)) shapelessGroups.set(key, [])
        shapelessGroups.get(key).push(entry)
      }
    }
  }
  for (const group of shapedGroups.values()) {
    const cells = mergeVariants(group.map((e) => e.cells))
    if (cells) shaped.push({ w: group[0].w, h: group[0].h, cells, result: group[0].result })
  }
  for (const group of shapelessGroups.values()) {
    const cells = mergeVariants(group.map((e) => e.cells))
    if (cells) shapeless.push({ cells, result: group[0].result })
  }

  function matchesShaped (recipe, pattern, w, h, mirrored) {
    if (recipe.w !== w || recipe.h !== h) return false
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const cell = recipe.cells[y * w + (mirrored ? w - 1 - x : x)]
        const id = pattern[y * w + x]
        if (cell === null ? id !== null : (id === null || !cell.has(id))) return false
      }
    }
    return true
  }

  function matchesShapeless (recipe, ids) {
    if (recipe.cells.length !== ids.length) return false
    const used = new Array(ids.length).fill(false)
    const assign = (i) => {
      if (i === recipe.cells.length) return true
      for (let j = 0; j < ids.length; j++) {
        if (!used[j] && recipe.cells[i].has(ids[j])) {
          used[j] = true
          if (assign(i + 1)) return true
          used[j] = false
        }
      }
      return false
    }
    return assign(0)
  }

  // grid: item ids (or null) row by row, size x size. Returns { id, count } or null.
  function match (grid, size) {
    let minX = size; let maxX = -1; let minY = size; let maxY = -1
    const ids = []
    for (let y = 0; y < size; y++) {
      for (let x = 0; x < size; x++) {
        const id = grid[y * size + x]
        if (id === null) continue
        ids.push(id)
        minX = Math.min(minX, x); maxX = Math.max(maxX, x); minY = Math.min(minY, y); maxY = Math.max(maxY, y)
      }
    }
    if (ids.length === 0) return null
    const w = maxX - minX + 1
    const h = maxY - minY + 1
    const pattern = []
    for (let y = minY; y <= maxY; y++) for (let x = minX; x <= maxX; x++) pattern.push(grid[y * size + x])
    for (const recipe of shaped) {
      if (matchesShaped(recipe, pattern, w, h, false) || matchesShaped(recipe, pattern, w, h, true)) return recipe.result
    }
    for (const recipe of shapeless) {
      if (matchesShapeless(recipe, ids)) return recipe.result
    }
    return null
  }

  return { match, shapedCount: shaped.length, shapelessCount: shapeless.length }
}

// ---------------------------------------------------------------------------------------------
// Server side: the recipe book and the crafting table block.

module.exports.createRecipeBook = createRecipeBook

module.exports.server = function (serv) {
  if (!serv.supportFeature('stateIdUsed')) {
    serv.warn('[crafting] needs Minecraft 1.17.1 or newer; crafting stays unimplemented on this version')
    return
  }
  serv.recipeBook = createRecipeBook(serv.registry)
  serv.once('asap', () => {
    // placeBlock.js defines onBlockInteraction after external plugins load.
    serv.onBlockInteraction('crafting_table', ({ block, player }) => {
      if (!player.craftingWindows) return false
      const held = player.inventory.slots[36 + player.heldItemSlot]
      if (player.crouching && held) return false // sneaking with an item places it, as in vanilla
      player.craftingWindows.openTable(block.position)
      return true
    })
  })
}

// ---------------------------------------------------------------------------------------------
// Player side: windows, clicks, cursor.

module.exports.player = function (player, serv) {
  if (!serv.recipeBook) return
  // External plugins run before inventory.js; set up once every builtin plugin is in place.
  player.once('asap', () => setupPlayer(player, serv))
}

function setupPlayer (player, serv) {
  const registry = serv.registry
  const Item = require('prismarine-item')(registry)
  const windowTypes = require('prismarine-windows')(registry).windows
  const craftingMenuType = windowTypes['minecraft:crafting'].type
  const book = serv.recipeBook
  const inv = player.inventory
  const itemEntityType = registry.entitiesByName.item.id

  const state = { stateId: 1, cursor: null, table: null, drag: null }
  player.craftingWindows = { openTable, closeTable: () => closeWindow(state.table ? state.table.id : 0), state }

  const count = (item) => Number(item.count)
  const sameItem = (a, b) => a && b && a.type === b.type && JSON.stringify(a.nbt ?? null) === JSON.stringify(b.nbt ?? null)
  const maxStack = (item) => registry.items[item.type]?.stackSize ?? 64
  const copy = (item, n) => (item && n > 0 ? new Item(item.type, n, item.metadata, item.nbt) : null)
  const nextStateId = () => { state.stateId = (state.stateId + 1) & 0x7fff; return state.stateId }

  // --- views: a window's slots over the real storage -----------------------------------------
  function setInv (slot, item) {
    if (item && count(item) <= 0) item = null
    if (item) { item.count = count(item); item.slot = slot }
    inv.slots[slot] = item
  }
  const inventoryView = {
    id: 0,
    size: 46,
    grid: [1, 2, 3, 4],
    gridSize: 2,
    invStart: 9, // first player-inventory slot of this window
    get: (i) => inv.slots[i] ?? null,
    set: setInv,
    toInv: (i) => i,
    fromInv: (s) => s,
    mayPlace (i, item) {
      if (i === 0) return false
      if (i >= 5 && i <= 8) return armorSlotFor(item) === i
      return true
    }
  }
  function tableView (table) {
    return {
      id: table.id,
      size: 46,
      grid: [1, 2, 3, 4, 5, 6, 7, 8, 9],
      gridSize: 3,
      invStart: 10,
      get: (i) => (i === 0 ? table.result : i <= 9 ? table.grid[i - 1] : inv.slots[i - 1] ?? null),
      set (i, item) {
        if (item && count(item) <= 0) item = null
        if (item) item.count = count(item)
        if (i === 0) table.result = item
        else if (i <= 9) { table.grid[i - 1] = item; if (item) item.slot = i }
        else setInv(i - 1, item)
      },
      toInv: (i) => (i >= 10 ? i - 1 : null),
      fromInv: (s) => (s >= 9 && s <= 44 ? s + 1 : null),
      mayPlace: (i) => i !== 0
    }
  }
  const currentView = () => (state.table ? tableView(state.table) : inventoryView)

  function armorSlotFor (item) {
    if (!item) return null
    const name = registry.items[item.type]?.name ?? ''
    if (name.endsWith('_helmet') || name === 'turtle_helmet' || name === 'carved_pumpkin' || name.endsWith('_head') || name.endsWith('_skull')) return 5
    if (name.endsWith('_chestplate') || name === 'elytra') return 6
    if (name.endsWith('_leggings')) return 7
    if (name.endsWith('_boots')) return 8
    return null
  }

  // --- packets ---------------------------------------------------------------------------------
  function sendSlot (windowId, slot, item) {
    player._client.write('set_slot', { windowId, stateId: nextStateId(), slot, item: Item.toNotch(item) })
  }
  function sendCursor () {
    player._client.write('set_slot', { windowId: -1, stateId: nextStateId(), slot: -1, item: Item.toNotch(state.cursor) })
  }
  function sendWindow (view) {
    const items = []
    for (let i = 0; i < view.size; i++) items.push(Item.toNotch(view.get(i)))
    player._client.write('window_items', { windowId: view.id, stateId: nextStateId(), items, carriedItem: Item.toNotch(state.cursor) })
  }

  // Anything else that changes the inventory (give, pickups, block placing) goes through
  // inv.updateSlot, which flying-squid answers on window 0; mirror it into an open table.
  inv.on('updateSlot', (slot, oldItem, newItem) => {
    if (!state.table) return
    const viewSlot = tableView(state.table).fromInv(slot)
    if (viewSlot !== null) sendSlot(state.table.id, viewSlot, newItem)
  })

  // --- crafting ----------------------------------------------------------------------------------
  function recompute (view) {
    const ids = view.grid.map((i) => view.get(i)?.type ?? null)
    const result = book.match(ids, view.gridSize)
    view.set(0, result ? new Item(result.id, result.count) : null)
  }

  // Takes the result once: consumes one of every grid item and recomputes. Returns the crafted
  // stack (null when there is nothing to craft).
  function craftOnce (view, changed) {
    recompute(view)
    const result = view.get(0)
    if (!result) return null
    const crafted = copy(result, count(result))
    for (const i of view.grid) {
      const item = view.get(i)
      if (!item) continue
      const remainderName = REMAINDERS[registry.items[item.type]?.name]
      const left = count(item) - 1
      if (left > 0) {
        view.set(i, copy(item, left))
        if (remainderName) giveOrDrop(new Item(registry.itemsByName[remainderName].id, 1), changed)
      } else {
        view.set(i, remainderName ? new Item(registry.itemsByName[remainderName].id, 1) : null)
      }
      changed.add(i)
    }
    recompute(view)
    changed.add(0)
    return crafted
  }

  // --- moving items ------------------------------------------------------------------------------
  // vanilla's moveItemStackTo: merge into matching stacks, then the first empty slot. Mutates
  // `stack`'s count; returns true when anything moved.
  function moveStackTo (view, stack, start, end, reverse, changed) {
    let moved = false
    const order = []
    for (let i = start; i < end; i++) order.push(i)
    if (reverse) order.reverse()
    const max = maxStack(stack)
    if (max > 1) {
      for (const i of order) {
        if (count(stack) <= 0) break
        const target = view.get(i)
        if (!target || !sameItem(target, stack) || !view.mayPlace(i, stack)) continue
        const room = max - count(target)
        if (room <= 0) continue
        const n = Math.min(room, count(stack))
        view.set(i, copy(target, count(target) + n))
        stack.count = count(stack) - n
        changed.add(i)
        moved = true
      }
    }
    if (count(stack) > 0) {
      for (const i of order) {
        if (view.get(i) || !view.mayPlace(i, stack)) continue
        const n = Math.min(max, count(stack))
        view.set(i, copy(stack, n))
        stack.count = count(stack) - n
        changed.add(i)
        moved = true
        break
      }
    }
    return moved
  }

  // vanilla's placeItemBackInInventory: existing stacks (held slot, offhand, then 0-35 in
  // inventory order), then free slots; what does not fit is dropped.
  function giveOrDrop (stack, changed) {
    if (!stack || count(stack) <= 0) return
    const held = 36 + (player.heldItemSlot ?? 0)
    const invOrder = [held, 45]
    for (let i = 36; i <= 44; i++) if (i !== held) invOrder.push(i)
    for (let i = 9; i <= 35; i++) invOrder.push(i)
    const view = currentView()
    const max = maxStack(stack)
    for (const s of invOrder) {
      const target = inv.slots[s]
      if (!sameItem(target, stack) || count(target) >= max) continue
      const n = Math.min(max - count(target), count(stack))
      setInv(s, copy(target, count(target) + n))
      stack.count = count(stack) - n
      markInv(view, s, changed)
      if (count(stack) <= 0) return
    }
    for (const s of invOrder.filter((s) => s !== 45)) {
      if (inv.slots[s]) continue
      const n = Math.min(max, count(stack))
      setInv(s, copy(stack, n))
      stack.count = count(stack) - n
      markInv(view, s, changed)
      if (count(stack) <= 0) return
    }
    drop(stack)
  }
  function markInv (view, invSlot, changed) {
    const viewSlot = view.fromInv(invSlot)
    if (viewSlot !== null) changed.add(viewSlot)
    else changed.add(`inv:${invSlot}`)
  }

  function drop (stack) {
    if (!stack || count(stack) <= 0) return
    const yaw = (player.yaw ?? 0) * Math.PI / 180
    const pitch = (player.pitch ?? 0) * Math.PI / 180
    serv.spawnObject(itemEntityType, player.world, player.position.offset(0, 1.3, 0), {
      velocity: new Vec3(-Math.sin(yaw) * Math.cos(pitch) * 3, -Math.sin(pitch) * 3 + 1, Math.cos(yaw) * Math.cos(pitch) * 3),
      itemId: stack.type,
      itemCount: count(stack),
      pickupTime: 2000,
      deathTime: 5 * 60 * 1000
    })
  }

  // Picks up a dropped item entity: whole stack, partially when the inventory is nearly full.
  player.collect = (entity) => {
    const stack = new Item(entity.itemId, Number(entity.itemCount) || 1)
    const before = count(stack)
    const max = maxStack(stack)
    const slots = []
    for (let i = 36; i <= 44; i++) slots.push(i)
    for (let i = 9; i <= 35; i++) slots.push(i)
    for (const s of slots) {
      const target = inv.slots[s]
      if (!sameItem(target, stack) || count(target) >= max) continue
      const n = Math.min(max - count(target), count(stack))
      inv.updateSlot(s, copy(target, count(target) + n))
      stack.count = count(stack) - n
      if (count(stack) <= 0) break
    }
    for (const s of slots) {
      if (count(stack) <= 0) break
      if (inv.slots[s]) continue
      const n = Math.min(max, count(stack))
      inv.updateSlot(s, copy(stack, n))
      stack.count = count(stack) - n
    }
    if (count(stack) === before) return
    entity._writeOthersNearby('collect', { collectedEntityId: entity.id, collectorEntityId: player.id, pickupItemCount: before - count(stack) })
    player.playSoundAtSelf?.('entity.item.pickup')
    if (count(stack) > 0) entity.itemCount = count(stack) // the rest stays on the ground
    else entity.destroy()
  }

  // --- clicks --------------------------------------------------------------------------------------
  function pickupClick (view, slot, button, changed) {
    if (slot === -999) {
      if (!state.cursor) return
      if (button === 0) { drop(state.cursor); state.cursor = null } else { drop(copy(state.cursor, 1)); state.cursor = copy(state.cursor, count(state.cursor) - 1) }
      return
    }
    if (slot === 0) { // result: take it all onto the cursor when it fits
      recompute(view)
      const result = view.get(0)
      if (!result) { changed.add(0); return }
      if (state.cursor && !(sameItem(state.cursor, result) && count(state.cursor) + count(result) <= maxStack(result))) { changed.add(0); return }
      const crafted = craftOnce(view, changed)
      state.cursor = state.cursor ? copy(state.cursor, count(state.cursor) + count(crafted)) : crafted
      return
    }
    const item = view.get(slot)
    const cursor = state.cursor
    changed.add(slot)
    if (!item) {
      if (!cursor || !view.mayPlace(slot, cursor)) return
      const n = button === 0 ? Math.min(count(cursor), maxStack(cursor)) : 1
      view.set(slot, copy(cursor, n))
      state.cursor = copy(cursor, count(cursor) - n)
    } else if (!cursor) {
      const n = button === 0 ? count(item) : Math.ceil(count(item) / 2)
      state.cursor = copy(item, n)
      view.set(slot, copy(item, count(item) - n))
    } else if (sameItem(item, cursor)) {
      if (!view.mayPlace(slot, cursor)) return
      const room = maxStack(item) - count(item)
      const n = Math.max(0, Math.min(room, button === 0 ? count(cursor) : 1))
      view.set(slot, copy(item, count(item) + n))
      state.cursor = copy(cursor, count(cursor) - n)
    } else if (view.mayPlace(slot, cursor) && count(cursor) <= maxStack(cursor)) {
      view.set(slot, cursor)
      state.cursor = item
    }
  }

  function quickMove (view, slot, changed) {
    if (slot === 0) { // craft as often as the grid and the inventory allow
      const start = view.invStart
      for (let guard = 0; guard < 64; guard++) {
        recompute(view)
        const result = view.get(0)
        if (!result) break
        const trial = copy(result, count(result))
        const end = view.id === 0 ? 45 : 46 // the offhand (45) is not a target in window 0
        if (!canFit(view, trial, start, end)) break
        const crafted = craftOnce(view, changed)
        moveStackTo(view, crafted, start, end, true, changed)
        const next = view.get(0)
        if (!next || next.type !== crafted.type) break
      }
      changed.add(0)
      return
    }
    const item = view.get(slot)
    if (!item) return
    const stack = copy(item, count(item))
    const isGrid = view.grid.includes(slot)
    if (view.id === 0) {
      const armorSlot = armorSlotFor(stack)
      if (isGrid || (slot >= 5 && slot <= 8) || slot === 45) {
        moveStackTo(view, stack, 9, 45, false, changed)
      } else if (armorSlot && !view.get(armorSlot)) {
        moveStackTo(view, stack, armorSlot, armorSlot + 1, false, changed)
      } else if (slot >= 9 && slot < 36) {
        moveStackTo(view, stack, 36, 45, false, changed)
      } else {
        moveStackTo(view, stack, 9, 36, false, changed)
      }
    } else if (isGrid) {
      moveStackTo(view, stack, 10, 46, false, changed)
    } else if (!moveStackTo(view, stack, 1, 10, false, changed)) {
      if (slot < 37) moveStackTo(view, stack, 37, 46, false, changed)
      else moveStackTo(view, stack, 10, 37, false, changed)
    }
    view.set(slot, copy(item, count(stack)))
    changed.add(slot)
  }

  function canFit (view, stack, start, end) {
    let left = count(stack)
    const max = maxStack(stack)
    for (let i = start; i < end && left > 0; i++) {
      const target = view.get(i)
      if (!target) left -= max
      else if (sameItem(target, stack)) left -= Math.max(0, max - count(target))
    }
    return left <= 0
  }

  function swapClick (view, slot, button, changed) {
    const invSlot = button === 40 ? 45 : 36 + button
    if (button !== 40 && (button < 0 || button > 8)) return
    const hotbarItem = inv.slots[invSlot] ?? null
    if (slot === 0) {
      if (hotbarItem) return
      const crafted = craftOnce(view, changed)
      if (crafted) { setInv(invSlot, crafted); markInv(view, invSlot, changed) }
      return
    }
    const item = view.get(slot)
    if (hotbarItem && !view.mayPlace(slot, hotbarItem)) return
    setInv(invSlot, item ? copy(item, count(item)) : null)
    view.set(slot, hotbarItem ? copy(hotbarItem, count(hotbarItem)) : null)
    markInv(view, invSlot, changed)
    changed.add(slot)
  }

  function throwClick (view, slot, button, changed) {
    if (state.cursor || slot < 0) return
    if (slot === 0) {
      drop(craftOnce(view, changed))
      return
    }
    const item = view.get(slot)
    if (!item) return
    const n = button === 1 ? count(item) : 1
    drop(copy(item, n))
    view.set(slot, copy(item, count(item) - n))
    changed.add(slot)
  }

  function dragClick (view, slot, button, changed) {
    const stage = button & 3
    const type = (button >> 2) & 3
    if (stage === 0) {
      state.drag = state.cursor && (type !== 2 || player.gameMode === 1) ? { type, slots: [] } : null
      return
    }
    const drag = state.drag
    if (!drag || drag.type !== type) { state.drag = null; return }
    if (stage === 1) {
      const item = slot >= 0 && slot < view.size ? view.get(slot) : undefined
      if (item === undefined || slot === 0 || drag.slots.includes(slot) || !state.cursor) return
      if (item && !sameItem(item, state.cursor)) return
      if (!view.mayPlace(slot, state.cursor)) return
      if (type !== 2 && drag.slots.length >= count(state.cursor)) return
      drag.slots.push(slot)
      return
    }
    state.drag = null
    if (!state.cursor || drag.slots.length === 0) return
    if (drag.slots.length === 1 && type !== 2) { pickupClick(view, drag.slots[0], type, changed); return }
    const cursor = state.cursor
    const max = maxStack(cursor)
    const each = type === 0 ? Math.floor(count(cursor) / drag.slots.length) : type === 1 ? 1 : max
    let left = count(cursor)
    for (const s of drag.slots) {
      const target = view.get(s)
      const have = target ? count(target) : 0
      const n = Math.max(0, Math.min(each, max - have, type === 2 ? max : left))
      if (n === 0) continue
      view.set(s, copy(cursor, have + n))
      if (type !== 2) left -= n
      changed.add(s)
    }
    state.cursor = type === 2 ? cursor : copy(cursor, left)
  }

  function doubleClick (view, slot, changed) {
    const cursor = state.cursor
    if (!cursor || slot === 0) return
    const max = maxStack(cursor)
    let have = count(cursor)
    for (let pass = 0; pass < 2 && have < max; pass++) {
      for (let i = 1; i < view.size && have < max; i++) {
        const item = view.get(i)
        if (!sameItem(item, cursor)) continue
        if (pass === 0 && count(item) >= max) continue
        const n = Math.min(max - have, count(item))
        have += n
        view.set(i, copy(item, count(item) - n))
        changed.add(i)
      }
    }
    state.cursor = copy(cursor, have)
  }

  player._client.removeAllListeners('window_click') // flying-squid's handler; see the top
  player._client.on('window_click', (click) => {
    try {
      handleClick(click)
    } catch (err) {
      serv.emit('error', err)
    }
  })

  function handleClick (click) {
    const view = currentView()
    if (click.windowId !== view.id) { rejectForeignClick(click); return }
    const { slot, mouseButton: button, mode } = click
    const before = new Map()
    for (let i = 0; i < view.size; i++) before.set(i, view.get(i))
    const cursorBefore = state.cursor
    const changed = new Set()
    const valid = slot === -999 || (slot >= 0 && slot < view.size)
    if (valid) {
      if (mode !== 5 && state.drag) state.drag = null
      if (mode === 0) pickupClick(view, slot, button, changed)
      else if (mode === 1 && slot >= 0) quickMove(view, slot, changed)
      else if (mode === 2 && slot >= 0) swapClick(view, slot, button, changed)
      else if (mode === 3 && slot >= 0) {
        const item = view.get(slot)
        if (player.gameMode === 1 && !state.cursor && item) state.cursor = copy(item, maxStack(item))
      } else if (mode === 4) throwClick(view, slot, button, changed)
      else if (mode === 5) dragClick(view, slot, button, changed)
      else if (mode === 6 && slot >= 0) doubleClick(view, slot, changed)
    }
    const gridTouched = slot === 0 || view.grid.includes(slot) || [...changed].some((s) => s === 0 || view.grid.includes(s))
    if (gridTouched) { recompute(view); changed.add(0) }

    if (!valid || click.stateId < 0) {
      sendWindow(view)
      return
    }
    // Answer what the client did not predict: changed slots it reported differently, slots it
    // reported that did not change, and always the result slot after a grid click.
    const claimed = new Map()
    for (const { location, item } of click.changedSlots || []) claimed.set(location, Item.fromNotch(item))
    const toSend = new Set([...changed].filter((s) => typeof s === 'number'))
    for (const s of claimed.keys()) if (s >= 0 && s < view.size) toSend.add(s)
    for (const s of [...toSend].sort((a, b) => a - b)) {
      const now = view.get(s)
      const clientHas = claimed.has(s) ? claimed.get(s) : before.get(s)
      if (s === 0 && gridTouched) sendSlot(view.id, 0, now)
      else if (!sameStack(clientHas, now)) sendSlot(view.id, s, now)
    }
    for (const s of changed) if (typeof s === 'string') sendSlot(0, Number(s.slice(4)), inv.slots[Number(s.slice(4))])
    const clientCursor = click.cursorItem ? Item.fromNotch(click.cursorItem) : cursorBefore
    if (!sameStack(clientCursor, state.cursor)) sendCursor()
  }

  // flying-squid's chest windows (chest.js) show 27 empty slots and store nothing: undo whatever
  // the client predicted so no item disappears into them. Clicks for closed windows are dropped.
  function rejectForeignClick (click) {
    if (click.windowId !== player.windowId || !['chest', 'ender_chest', 'shulker_box'].includes(player.windowType)) return
    const items = new Array(27).fill(null)
    for (let s = 9; s <= 44; s++) items.push(inv.slots[s] ?? null)
    player._client.write('window_items', { windowId: click.windowId, stateId: nextStateId(), items: items.map((i) => Item.toNotch(i)), carriedItem: Item.toNotch(state.cursor) })
  }

  function sameStack (a, b) {
    if (!a || !b) return !a && !b
    return a.type === b.type && count(a) === count(b)
  }

  // --- opening and closing -------------------------------------------------------------------------
  function openTable (position) {
    if (state.table) closeWindow(state.table.id)
    player.windowId = ((player.windowId ?? 0) % 100) + 1
    state.table = { id: player.windowId, position: position.clone(), grid: new Array(9).fill(null), result: null }
    player.windowType = 'crafting_table'
    player.windowPos = position
    player._client.write('open_window', {
      windowId: state.table.id,
      inventoryType: craftingMenuType,
      windowTitle: serv._createChatComponent({ translate: 'container.crafting' }).toNetworkFormat()
    })
    sendWindow(tableView(state.table))
  }

  // Puts grid items and the cursor back into the inventory (vanilla drops what does not fit).
  function closeWindow (windowId, disconnected = false) {
    const changed = new Set()
    let grid
    if (state.table && windowId === state.table.id) {
      grid = state.table.grid.filter(Boolean)
      state.table = null
    } else if (windowId === 0) {
      grid = inventoryView.grid.map((i) => inv.slots[i]).filter(Boolean)
      for (const i of [0, ...inventoryView.grid]) setInv(i, null)
    } else {
      return
    }
    state.drag = null
    const back = [...grid]
    if (state.cursor) back.push(state.cursor)
    state.cursor = null
    for (const item of back) giveOrDrop(copy(item, count(item)), changed)
    if (disconnected) return
    // The window is gone on the client; answer on window 0.
    const touched = new Set([0, 1, 2, 3, 4])
    // state.table is already null here, so the slots giveOrDrop marked are inventory slots.
    for (const s of changed) touched.add(typeof s === 'string' ? Number(s.slice(4)) : s)
    for (const s of [...touched].sort((a, b) => a - b)) if (s >= 0 && s < 46) sendSlot(0, s, inv.slots[s])
    if (back.length) sendCursor()
  }

  player._client.on('close_window', ({ windowId }) => {
    try { closeWindow(windowId) } catch (err) { serv.emit('error', err) }
  })
  // Before flying-squid saves the player (its save reads the inventory after an await).
  player._client.on('end', () => {
    try {
      if (state.table) closeWindow(state.table.id, true)
      closeWindow(0, true)
    } catch (err) { serv.emit('error', err) }
  })
  // Creative clients set window-0 slots directly, the 2x2 grid included.
  player._client.on('set_creative_slot', ({ slot }) => {
    if (slot >= 1 && slot <= 4) { recompute(inventoryView); sendSlot(0, 0, inv.slots[0]) }
  })
}
