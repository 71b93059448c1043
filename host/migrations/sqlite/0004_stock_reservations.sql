-- Stock reservations (issue 13). `products.stock` stays the count on hand an operator sets;
-- `reserved` is what placed and paid orders hold, so what can be sold is stock - reserved.
-- An order holds its reservation (`stock_reserved` = 1) from the transaction that places it
-- until the one transition that releases (cancelled) or consumes (shipped) it clears the flag:
-- a reservation is settled at most once. Orders placed before this migration hold none.
ALTER TABLE products ADD COLUMN reserved INTEGER NOT NULL DEFAULT 0 CHECK (reserved >= 0);
ALTER TABLE orders ADD COLUMN stock_reserved INTEGER NOT NULL DEFAULT 0
    CHECK (stock_reserved IN (0, 1));
