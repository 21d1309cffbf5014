"""Intentions for the ``intention-en`` and ``intention-zh`` evaluation protocols.

Each user gets an intention derived from the held-out item's genres: one genre of the item
and one of eight phrasings of it, both chosen with a fixed seed per user. The phrasings
describe the genre without its name (nor the name's stem, nor the Chinese genre word that
training uses), never name a title, and share nothing with the phrasings fine-tuning uses
(model/train.py ``TRAIN_INTENTIONS_*``): the protocols measure whether a model follows a
request it has not seen worded that way. ``tests/unit/test_intention_probes.py`` checks
these rules against ml-100k's titles.
"""

from __future__ import annotations

import random
from collections.abc import Mapping

from model.data import Dataset
from model.evaluation import UserSplit

PROBES_EN: Mapping[str, tuple[str, ...]] = {
    "Action": (
        "car chases, explosions and a hero who never stops running",
        "lots of fist fights and gun battles",
        "something loud with stunts and shootouts",
        "a high-octane ride full of fights",
        "big set pieces, chases and a body count",
        "a tough guy taking on an army of bad guys",
        "nonstop punches, crashes and firepower",
        "a film where things blow up every ten minutes",
    ),
    "Adventure": (
        "a journey to faraway lands in search of treasure",
        "explorers crossing jungles and deserts",
        "a daring expedition into the unknown",
        "heroes travelling across the world against the odds",
        "a swashbuckling voyage with pirates and lost maps",
        "an epic trek with danger around every corner",
        "a band of travellers hunting for a legendary prize",
        "something with a long dangerous journey and discovery",
    ),
    "Animation": (
        "a cartoon feature",
        "something hand-drawn or computer-drawn, not live actors",
        "drawn characters and colourful painted worlds",
        "a film made of drawings brought to life",
        "talking cartoon animals",
        "a feature-length cartoon with songs",
        "computer-generated characters, no real actors",
        "a film where every frame is drawn",
    ),
    "Children's": (
        "something the whole family can watch with little ones",
        "a film made for young viewers",
        "a gentle story suitable for a seven-year-old",
        "a film for youngsters on a Saturday afternoon",
        "something fun and harmless for toddlers",
        "a film aimed at viewers under twelve",
        "a family film with a young hero",
        "a story a kid would love before bedtime",
    ),
    "Comedy": (
        "something that makes me laugh out loud",
        "a funny film with lots of jokes",
        "a lighthearted film full of gags",
        "a goofy film to cheer me up",
        "witty banter and silly situations",
        "a film that is hilarious from start to finish",
        "something with jokes and pratfalls",
        "a feel-good film with plenty of laughs",
    ),
    "Crime": (
        "gangsters, heists and corrupt cops",
        "a story about a bank robbery gone wrong",
        "the mob, murder and organised gangs",
        "detectives chasing a killer through the city",
        "a gritty tale of criminals and the law",
        "con artists pulling off a big score",
        "a film about a hitman and the police on his trail",
        "drug dealers, thieves and a robbery plan",
    ),
    "Documentary": (
        "a nonfiction film about real events",
        "real people and real footage, no actors",
        "a factual film that teaches me something true",
        "interviews and archive footage about a real subject",
        "a true account filmed as it happened",
        "an informative film about the real world",
        "a filmed investigation of actual events",
        "something factual rather than made up",
    ),
    "Drama": (
        "a serious, emotional story about people's lives",
        "a moving character study",
        "something sombre and heartfelt",
        "a film about family struggles and hard choices",
        "a tearjerker with strong performances",
        "a slow, thoughtful story about ordinary lives",
        "a weighty film about grief and redemption",
        "an emotional film with great acting",
    ),
    "Fantasy": (
        "wizards, dragons and magical kingdoms",
        "a story set in an enchanted world",
        "magic spells and mythical creatures",
        "a fairy-tale world with sorcery",
        "a journey through a land of elves and wizards",
        "something with magic and impossible creatures",
        "a whimsical story full of enchantment",
        "a film where magic is real",
    ),
    "Film-Noir": (
        "a shadowy black-and-white tale of a femme fatale",
        "a cynical private eye in rain-soaked streets",
        "a hard-boiled detective story from the forties",
        "double-crosses, fedoras and smoky offices",
        "a doomed man lured by a dangerous woman",
        "moody crime in stark light and darkness",
        "a fatalistic story of murder and betrayal in the city at night",
        "a classic hard-boiled story with a bleak ending",
    ),
    "Horror": (
        "something that will keep me awake at night",
        "monsters, blood and screaming",
        "a film that scares the living daylights out of me",
        "a haunted house and things that go bump in the night",
        "a slasher with a masked killer",
        "ghosts, demons and creeping dread",
        "something terrifying and gory",
        "a frightening film to watch with the lights off",
    ),
    "Musical": (
        "people bursting into song and dance",
        "a film full of big song-and-dance numbers",
        "a Broadway production filmed with singing",
        "characters who sing their feelings",
        "tap dancing and catchy tunes",
        "a film where the story is told in songs",
        "a Broadway-style production with a chorus line",
        "lots of singing and choreographed dancing",
    ),
    "Mystery": (
        "a whodunit with a clever twist",
        "a puzzle to solve before the detective does",
        "an unsolved riddle and hidden clues",
        "a sleuth piecing together the clues",
        "something with secrets and a surprising reveal",
        "a baffling case with many suspects",
        "a film that keeps me guessing who did it",
        "an enigma unravelled clue by clue",
    ),
    "Romance": (
        "a love story",
        "two people falling in love",
        "a sweet tale of a couple meeting",
        "something about a passionate affair",
        "a date-night film about true love",
        "a story of lovers kept apart",
        "a film about courtship and a first kiss",
        "a heartwarming story of a couple finding each other",
    ),
    "Sci-Fi": (
        "spaceships, extraterrestrials and distant planets",
        "a story set in the far future",
        "robots, time travel and advanced technology",
        "an invasion of earth from outer space",
        "a film about space exploration",
        "a futuristic world with strange machines",
        "something with starships and laser weapons",
        "a story of visitors from another galaxy",
    ),
    "Thriller": (
        "suspense that keeps me on my toes",
        "a tense cat-and-mouse chase",
        "a nail-biter with a ticking clock",
        "a gripping film that keeps my heart pounding",
        "a predator, a victim and mounting tension",
        "a conspiracy closing in on the hero",
        "something suspenseful with a twist at the end",
        "a race against time with a killer on the loose",
    ),
    "War": (
        "soldiers on the battlefield",
        "a story of the troops in the trenches",
        "combat and the front lines of a great conflict",
        "platoons, bombs and battles",
        "the second world conflict seen by soldiers",
        "an army unit behind enemy lines",
        "a film about a battle and its soldiers",
        "the brutality of combat and the men who fought",
    ),
    "Western": (
        "cowboys, saloons and gunfights at midday",
        "a sheriff and outlaws on the frontier",
        "horses, six-shooters and dusty towns",
        "a gunslinger riding into a frontier town",
        "cattle drives and a showdown on main street",
        "the wild frontier with bandits and a lawman",
        "a lone rider on the open plains",
        "a film with cowboys and a shootout",
    ),
}

PROBES_ZH: Mapping[str, tuple[str, ...]] = {
    "Action": (
        "飞车追逐和爆炸场面", "拳拳到肉的打斗", "枪战和特技很多的", "节奏很快、一直在打的片子",
        "主角一个人对付一群坏人", "大场面和追车戏", "火力全开的火爆片", "每隔十分钟就有东西爆炸",
    ),
    "Adventure": (
        "远赴他乡寻找宝藏", "探险家穿越丛林和沙漠", "闯入未知世界的远征", "英雄踏上环游世界的旅程",
        "海盗和藏宝图的航行", "一路危机四伏的长途跋涉", "一群旅人寻找传说中的宝物", "关于远行和发现的故事",
    ),
    "Animation": (
        "卡通长片", "手绘或电脑绘制的角色，不是真人", "画出来的角色和五彩的世界", "把图画变活的电影",
        "会说话的卡通动物", "带歌曲的卡通长片", "电脑做出来的角色，没有真人演员", "每一帧都是画出来的",
    ),
    "Children's": (
        "适合全家和小朋友一起看的", "专门拍给小孩子看的片子", "适合七岁孩子的温和故事", "周末下午给孩子看的",
        "给小朋友看的轻松安全的片子", "面向十二岁以下观众的片子", "小英雄当主角的合家欢", "孩子睡前会喜欢的故事",
    ),
    "Comedy": (
        "能让我笑出声的", "笑料不断的片子", "轻松搞笑的电影", "让我开心一下的傻乐片",
        "妙语连珠的滑稽情节", "从头笑到尾的", "段子和笑点很多的", "看完心情变好的爆笑片",
    ),
    "Crime": (
        "黑帮、劫案和腐败警察", "一次失手的银行抢劫", "黑手党、谋杀和地下世界", "警探在城里追捕杀手",
        "罪犯和法律较量的故事", "骗子们干一票大的", "杀手和追踪他的警察", "毒贩、小偷和抢劫计划",
    ),
    "Documentary": (
        "讲真实事件的非虚构影片", "真人真事的实拍，没有演员", "能学到真实知识的片子", "采访和历史影像讲一个真实主题",
        "如实记录事情经过的影片", "介绍真实世界的片子", "对真实事件的影像调查", "讲事实而不是编出来的故事",
    ),
    "Drama": (
        "严肃动人的人生故事", "细腻的人物刻画", "沉重又真挚的片子", "关于家庭困境和艰难抉择",
        "演技出色的催泪片", "慢节奏讲普通人生活的", "关于悲伤与救赎的厚重电影", "情感充沛、表演精彩的",
    ),
    "Fantasy": (
        "巫师、巨龙和魔法王国", "发生在被施了魔法的世界里", "咒语和神话生物", "有巫术的童话世界",
        "在精灵和巫师的国度里闯荡", "有魔法和不可思议生物的", "充满魔力的异想故事", "魔法是真实存在的世界",
    ),
    "Film-Noir": (
        "黑白光影里的蛇蝎美人", "雨夜街头愤世嫉俗的私家侦探", "四十年代的硬汉侦探故事", "背叛、礼帽和烟雾缭绕的办公室",
        "被危险女人引向毁灭的男人", "强烈明暗对比下的阴郁罪案", "夜色都市里的谋杀与背叛宿命",
        "结局扭曲的经典硬汉派故事",
    ),
    "Horror": (
        "看完晚上会睡不着的", "怪物、鲜血和尖叫", "能把我吓得魂飞魄散的", "闹鬼的房子和半夜的怪声",
        "戴面具的杀人狂", "鬼魂、恶魔和步步逼近的不安", "又吓人又血腥的", "适合关灯看的吓人片子",
    ),
    "Musical": (
        "角色突然载歌载舞", "有很多大型唱跳场面", "搬上银幕的舞台剧，边唱边演", "用唱歌表达感情的角色",
        "踢踏舞和百老汇曲目", "用歌曲讲故事的电影", "百老汇风格的群舞表演", "大量演唱和编排好的舞蹈",
    ),
    "Mystery": (
        "有巧妙反转的谁是凶手", "在侦探之前解开谜题", "未解之谜和隐藏的线索", "侦探一点点拼凑线索",
        "有秘密和意外揭晓的", "嫌疑人很多的离奇案件", "让我一直猜谁干的", "一条条线索解开的谜团",
    ),
    "Romance": (
        "一个关于相爱的故事", "两个人坠入情网", "一对恋人相遇的甜蜜故事", "关于一段炽热恋情的",
        "适合约会看的真爱故事", "被迫分离的恋人", "关于追求和初吻的电影", "两个人终于走到一起的暖心故事",
    ),
    "Sci-Fi": (
        "飞船、外星人和遥远的星球", "发生在遥远未来的故事", "机器人、时间旅行和高科技", "外星人入侵地球",
        "关于太空探索的电影", "满是奇异机器的未来世界", "有星舰和激光武器的", "来自另一个星系的访客",
    ),
    "Thriller": (
        "让我坐立不安的紧张感", "紧张的猫鼠追逐", "分秒必争、让人咬指甲的", "心跳加速、扣人心弦的",
        "跟踪者、受害者和不断升级的紧张", "一场步步逼近主角的阴谋", "结尾有反转的紧张片子", "和逍遥法外的杀手赛跑",
    ),
    "War": (
        "战场上的士兵", "战壕里的部队", "一场大冲突的前线交火", "排、炸弹和战役",
        "士兵眼中的第二次世界大战", "深入敌后的部队", "关于一场战役和士兵的电影", "前线的残酷和上过战场的人",
    ),
    "Western": (
        "牛仔、酒馆和正午决斗", "边疆的警长和亡命徒", "马匹、左轮枪和尘土飞扬的小镇", "枪手骑马来到边疆小镇",
        "赶牛和大街上的对决", "有土匪和执法者的蛮荒边疆", "平原上的独行骑士", "有牛仔和枪战的电影",
    ),
}  # fmt: skip

LANGUAGES = {"en": PROBES_EN, "zh": PROBES_ZH}


def probe_intention(dataset: Dataset, split: UserSplit, language: str, seed: int = 0) -> tuple[str, str] | None:
    """(genre, intention) for ``split``'s held-out item, fixed by the seed and the user;
    None when the item has no genre with phrasings (ml-100k's "unknown")."""
    genres = [g for g in dataset.items[split.test].genres if g in LANGUAGES[language]]
    if not genres:
        return None
    rng = random.Random(f"{seed}:intention-{language}:{split.user_id}")
    genre = rng.choice(genres)
    return genre, rng.choice(LANGUAGES[language][genre])
