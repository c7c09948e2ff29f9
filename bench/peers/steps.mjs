// steps.mjs — the order_fulfillment workload as the peers run it: five
// sequential steps (order.create, payment.charge, inventory.reserve,
// shipping.schedule, order.approve), each a small business write that
// records its idempotency key in the same transaction, as sagad's
// participants do (participants/runtime): a repeated key returns the stored
// result and writes nothing.
export const STEPS = [
  ['order', 'create'], ['payment', 'charge'], ['inventory', 'reserve'],
  ['shipping', 'schedule'], ['order', 'approve'],
];
export const SERVICES = ['order', 'payment', 'inventory', 'shipping'];
