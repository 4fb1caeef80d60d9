/**
 * How names and durations read in messages and log lines.
 */
import * as Duration from "effect/Duration"

/** The longest peer name a message shows in full; longer ones are cut, with their length. */
const maxPeerInMessage = 256

/** `peer` as messages and log lines show it: in full up to 256 characters, otherwise its first 256 and its length. */
export const displayPeer = (peer: string): string =>
  peer.length <= maxPeerInMessage ? peer : `${peer.slice(0, maxPeerInMessage)}… (${peer.length} characters)`

/** A duration in milliseconds as people read it: `1m`, `10s`, `1m 30s`, `250ms`. */
export const displayMillis = (millis: number): string => Duration.format(Duration.millis(millis))
