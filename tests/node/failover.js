#!/usr/bin/env node
// kafkajs through the loss of a node: its group coordinator, which leads partitions too.
//
// Usage: node failover.js BOOTSTRAP TOPIC GROUP N
//
// TOPIC must exist, replicated (the test creates it with RF 3, min.insync.replicas 2).
// 1. An idempotent producer sends N keyed messages with acks -1. A consumer in GROUP reads
//    all of them and commits. The script prints "READY" and waits for a line on stdin; the
//    test kills the group's coordinator (kill -9) before it sends that line.
// 2. The producer sends N more. kafkajs must find the partitions' new leaders and retry; every
//    send it was told succeeded is acknowledged.
// 3. The same consumer keeps running. It must find the group's new coordinator and read every
//    acknowledged message at least once (a rejoin after the failover may deliver some twice,
//    as Kafka allows), each partition's first deliveries in offset order. It then commits
//    after everything it read, and admin.fetchOffsets shows the commits at every partition's
//    high watermark.
//
// Exits 0 when every check passes; otherwise prints what differed and exits 1.
'use strict'

const readline = require('readline')
const { Kafka, logLevel } = require('kafkajs')
const common = require('./common')

const { fail, sleep } = common

const DEADLINE_MS = 90000

const until = (what, check) => common.until(what, check, DEADLINE_MS)

async function produce(producer, topic, prefix, n) {
  const keys = []
  for (let start = 0; start < n; start += 50) {
    const messages = []
    for (let i = start; i < Math.min(n, start + 50); i++) {
      messages.push({ key: `${prefix}-${i}`, value: `v-${prefix}-${i}` })
    }
    await producer.send({ topic, acks: -1, messages })
    for (const m of messages) keys.push(m.key)
  }
  return keys
}

async function main() {
  const [bootstrap, topic, group, nArg] = process.argv.slice(2)
  if (!bootstrap || !topic || !group || !nArg) {
    console.error('usage: failover.js BOOTSTRAP TOPIC GROUP N')
    process.exit(2)
  }
  const n = parseInt(nArg, 10)
  const kafka = new Kafka({
    clientId: 'kafkajs-failover',
    brokers: bootstrap.split(','),
    logLevel: { info: logLevel.INFO, debug: logLevel.DEBUG }[process.env.KAFKAJS_LOG] || logLevel.NOTHING,
    connectionTimeout: 3000,
    requestTimeout: 10000,
    retry: { retries: 30, initialRetryTime: 200, maxRetryTime: 2000 },
  })
  const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 })
  await producer.connect()
  const read = [] // {partition, offset, key, value}
  const consumer = kafka.consumer({
    groupId: group,
    sessionTimeout: 10000,
    heartbeatInterval: 300,
    maxWaitTimeInMs: 100,
  })
  let joins = 0
  consumer.on(consumer.events.GROUP_JOIN, () => joins++)
  await consumer.connect()
  await consumer.subscribe({ topics: [topic], fromBeginning: true })
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ partition, message }) => {
      read.push({
        partition,
        offset: BigInt(message.offset),
        key: message.key.toString(),
        value: message.value.toString(),
      })
    },
  })
  const commit = async () => {
    const next = new Map()
    for (const m of read) {
      const o = m.offset + 1n
      if (!next.has(m.partition) || next.get(m.partition) < o) next.set(m.partition, o)
    }
    const offsets = [...next].map(([partition, o]) => ({ topic, partition, offset: o.toString() }))
    await consumer.commitOffsets(offsets)
  }
  const readKeys = () => new Set(read.map(m => m.key))

  // --- 1. before the failover ---
  const first = await produce(producer, topic, 'a', n)
  await until(`the group to read ${n} messages`, () => readKeys().size >= n)
  await commit()
  console.log(`READY: read and committed ${n} messages`)
  const lines = readline.createInterface({ input: process.stdin })
  await new Promise(resolve => lines.once('line', resolve))
  lines.close()
  console.log('the coordinator was killed')

  // --- 2. produce through the failover ---
  const started = Date.now()
  const second = await produce(producer, topic, 'b', n)
  await producer.disconnect()
  console.log(`produced ${n} more with acks -1 in ${Date.now() - started} ms`)

  // --- 3. the group reads on through the failover ---
  const want = [...first, ...second]
  await until(`the group to read all ${want.length} messages`, () => {
    const have = readKeys()
    return want.every(k => have.has(k))
  })
  await commit()
  const seen = new Set()
  const last = new Map()
  for (const m of read) {
    if (m.value !== `v-${m.key}`) fail(`${m.key} has value ${m.value}`)
    if (seen.has(m.key)) continue
    seen.add(m.key)
    if (last.has(m.partition) && last.get(m.partition) >= m.offset) {
      fail(`partition ${m.partition}: first delivery of offset ${m.offset} after ${last.get(m.partition)}`)
    }
    last.set(m.partition, m.offset)
  }
  if (seen.size !== want.length) fail(`read ${seen.size} distinct keys, produced ${want.length}`)
  await consumer.disconnect()

  const admin = kafka.admin()
  await admin.connect()
  const ends = await admin.fetchTopicOffsets(topic)
  const committed = await admin.fetchOffsets({ groupId: group, topics: [topic] })
  let total = 0n
  for (const e of ends) {
    total += BigInt(e.high)
    const c = committed[0].partitions.find(p => p.partition === e.partition)
    if (!c || c.offset !== e.high) {
      fail(`committed ${c && c.offset} for partition ${e.partition}, high watermark ${e.high}`)
    }
  }
  await admin.disconnect()
  if (total !== BigInt(want.length)) fail(`high watermarks sum to ${total}, acknowledged ${want.length}`)
  console.log(
    `read all ${want.length} messages (${read.length - want.length} delivered twice); ` +
      `commits at every high watermark; the consumer joined the group ${joins} times`
  )
}

main().catch(e => {
  console.error(e)
  process.exit(1)
})
