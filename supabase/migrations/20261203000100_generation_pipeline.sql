-- The generation pipeline's tables. Statuses only move forward; the
-- constraints and triggers below make the bad states impossible rather
-- than unlikely.

create table public.customizations (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  recipient_name text not null check (char_length(recipient_name) between 1 and 100),
  sender_name text not null check (char_length(sender_name) between 1 and 100),
  occasion text not null check (char_length(occasion) between 1 and 100),
  mood text not null check (char_length(mood) between 1 and 50),
  genre text not null check (char_length(genre) between 1 and 50),
  song_length_seconds integer not null default 120
    check (song_length_seconds between 10 and 300),
  memories text not null default '' check (char_length(memories) <= 2000),
  things_to_avoid text not null default ''
    check (char_length(things_to_avoid) <= 1000),
  created_at timestamptz not null default now()
);
create index customizations_user_id_idx on public.customizations (user_id);

create table public.orders (
  id uuid primary key default gen_random_uuid(),
  user_id uuid not null,
  customization_id uuid not null references public.customizations (id),
  stripe_session_id text not null unique,
  stripe_payment_intent_id text,
  amount_total bigint check (amount_total >= 0),
  currency text check (currency ~ '^[a-z]{3}$'),
  status text not null default 'paid'
    check (status in ('paid', 'generating', 'completed', 'failed')),
  -- When Kafka acknowledged generation.requested; null means not handed on.
  published_at timestamptz,
  error text,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  completed_at timestamptz
);
create index orders_user_id_idx on public.orders (user_id);
create index orders_unpublished_idx on public.orders (created_at)
  where status = 'paid' and published_at is null;

create table public.song_variants (
  id uuid primary key default gen_random_uuid(),
  order_id uuid not null references public.orders (id) on delete cascade,
  variant_number smallint not null check (variant_number between 1 and 3),
  status text not null default 'pending'
    check (status in ('pending', 'generating', 'complete', 'failed')),
  attempt_count integer not null default 0 check (attempt_count >= 0),
  storage_path text,
  error text,
  share_token uuid not null default gen_random_uuid() unique,
  created_at timestamptz not null default now(),
  updated_at timestamptz not null default now(),
  started_at timestamptz,
  completed_at timestamptz,
  unique (order_id, variant_number),
  check (status <> 'complete' or storage_path is not null)
);

create table public.failed_jobs (
  -- The dead letter's own id, so storing one twice is impossible.
  id uuid primary key,
  order_id uuid,
  job_type text not null,
  event_data jsonb not null,
  error_message text not null,
  error_stack text not null default '',
  retry_count integer not null default 0 check (retry_count >= 0),
  source_topic text,
  failed_at timestamptz not null,
  replayed_at timestamptz,
  replay_count integer not null default 0 check (replay_count >= 0),
  created_at timestamptz not null default now()
);
create index failed_jobs_order_id_idx on public.failed_jobs (order_id);

create table public.stripe_events (
  event_id text primary key,
  event_type text not null,
  stripe_session_id text,
  order_id uuid references public.orders (id),
  outcome text not null,
  received_at timestamptz not null default now()
);

-- Forward-only statuses. A replay of dead-lettered work may move a failed
-- variant back to pending, and only when the transaction says so with
-- set_config('songswipe.replay', 'on', true).
create function public.status_rank(kind text, status text) returns integer
  language sql immutable
  as $$
    select case
      when kind = 'order' then
        case status when 'paid' then 0 when 'generating' then 1 else 2 end
      else
        case status when 'pending' then 0 when 'generating' then 1 else 2 end
    end
  $$;

create function public.refuse_backward_status() returns trigger
  language plpgsql
  as $$
  declare
    kind text := tg_argv[0];
    terminal boolean := public.status_rank(kind, old.status) = 2;
    replaying boolean := coalesce(current_setting('songswipe.replay', true), '') = 'on';
  begin
    new.updated_at := now();
    if new.status = old.status then
      if terminal and kind = 'variant' and new is distinct from old then
        -- A finished variant keeps its song; only its attempt bookkeeping
        -- may still change.
        if new.storage_path is distinct from old.storage_path then
          raise exception 'variant % is % and cannot change its song',
            old.id, old.status using errcode = 'check_violation';
        end if;
      end if;
      return new;
    end if;
    if replaying and old.status = 'failed' and new.status in ('pending', 'generating') then
      return new;
    end if;
    if terminal
       or public.status_rank(kind, new.status) < public.status_rank(kind, old.status) then
      raise exception '% % cannot move from % to %', kind, old.id, old.status, new.status
        using errcode = 'check_violation';
    end if;
    return new;
  end
  $$;

create trigger orders_forward_only
  before update on public.orders
  for each row execute function public.refuse_backward_status('order');

create trigger song_variants_forward_only
  before update on public.song_variants
  for each row execute function public.refuse_backward_status('variant');

-- Row level security: a signed-in customer reads only their own rows. The
-- services connect as the owner or service_role, which RLS does not limit.
alter table public.customizations enable row level security;
alter table public.orders enable row level security;
alter table public.song_variants enable row level security;
alter table public.failed_jobs enable row level security;
alter table public.stripe_events enable row level security;

create policy customizations_owner_read on public.customizations
  for select to authenticated using (user_id = auth.uid());
create policy orders_owner_read on public.orders
  for select to authenticated using (user_id = auth.uid());
create policy song_variants_owner_read on public.song_variants
  for select to authenticated using (
    exists (
      select 1 from public.orders o
      where o.id = song_variants.order_id and o.user_id = auth.uid()
    )
  );

grant select on public.customizations, public.orders, public.song_variants
  to authenticated;
grant all on public.customizations, public.orders, public.song_variants,
  public.failed_jobs, public.stripe_events to service_role;
