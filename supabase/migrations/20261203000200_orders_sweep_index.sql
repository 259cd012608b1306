-- The webhook's sweep also looks for orders published long ago that are
-- still paid (the orchestrator never took them); without this index that
-- query reads every order.
create index orders_paid_published_idx on public.orders (published_at)
  where status = 'paid' and published_at is not null;
